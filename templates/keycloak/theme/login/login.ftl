<#-- Urban Stack: the sign-in form. Either user name (or e-mail address) and password, or, once
     the name is known (identity-first sign-in with organizations), the password alone below the
     labelled read-only name. Identity providers and registration as the realm allows them. -->
<#import "template.ftl" as layout>
<#import "field.ftl" as field>
<#import "buttons.ftl" as buttons>
<#import "social-providers.ftl" as identityProviders>
<#import "passkeys.ftl" as passkeys>
<#import "urbanstack.ftl" as us>
<#assign username=us.attemptedUser in layout>
<#assign mayRegister = realm.password && realm.registrationAllowed && !registrationDisabled??>
<@layout.registrationLayout displayMessage=!messagesPerField.existsError('username','password') displayInfo=mayRegister; section>
  <#if section = "header">
    ${msg("loginAccountTitle")}
  <#elseif section = "form" && realm.password>
    <form id="kc-form-login" class="${properties.kcFormClass!}" action="${url.loginAction}" method="post" novalidate>
      <#if usernameHidden??>
        <@field.password name="password" label=msg("password") forgotPassword=realm.resetPasswordAllowed
                         autofocus=true autocomplete="current-password"/>
      <#else>
        <#assign nameLabel><#if !realm.loginWithEmailAllowed>${msg("username")}<#elseif !realm.registrationEmailAsUsername>${msg("usernameOrEmail")}<#else>${msg("email")}</#if></#assign>
        <@field.input name="username" label=nameLabel value=login.username!'' autofocus=true
                      error=kcSanitize(messagesPerField.getFirstError('username','password'))?no_esc
                      autocomplete=(enableWebAuthnConditionalUI?has_content)?then('username webauthn', 'username')/>
        <@field.password name="password" label=msg("password") error="" forgotPassword=realm.resetPasswordAllowed
                         autocomplete="current-password">
          <#if realm.rememberMe>
            <@field.checkbox name="rememberMe" label=msg("rememberMe") value=login.rememberMe??/>
          </#if>
        </@field.password>
      </#if>
      <input type="hidden" id="id-hidden-input" name="credentialId" value="${auth.selectedCredential!''}">
      <@buttons.loginButton/>
    </form>
    <@passkeys.conditionalUIData/>
  <#elseif section = "socialProviders" && realm.password && (social.providers!)?has_content>
    <@identityProviders.show social=social/>
  <#elseif section = "info" && mayRegister>
    <p id="kc-registration">${msg("noAccount")} <a href="${url.registrationUrl}">${msg("doRegister")}</a></p>
  </#if>
</@layout.registrationLayout>
