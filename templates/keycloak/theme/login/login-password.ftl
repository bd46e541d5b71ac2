<#-- Urban Stack: the password step after the user name (or e-mail address) was given. The
     given name is shown in a labelled read-only field with a link to start over. -->
<#import "template.ftl" as layout>
<#import "field.ftl" as field>
<#import "buttons.ftl" as buttons>
<#import "passkeys.ftl" as passkeys>
<#import "urbanstack.ftl" as us>
<#assign username=us.attemptedUser in layout>
<@layout.registrationLayout displayMessage=!messagesPerField.existsError('password'); section>
  <#if section = "header">
    ${msg("doLogIn")}
  <#elseif section = "form">
    <form id="kc-form-login" class="${properties.kcFormClass!}" action="${url.loginAction}" method="post">
      <@field.password name="password" label=msg("password") forgotPassword=realm.resetPasswordAllowed
                       autofocus=true autocomplete="current-password"/>
      <@buttons.loginButton/>
    </form>
    <@passkeys.conditionalUIData/>
  </#if>
</@layout.registrationLayout>
