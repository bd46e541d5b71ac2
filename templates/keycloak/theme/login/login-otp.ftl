<#-- Urban Stack: the one-time-code step of the sign-in. Several authenticators are offered as
     radio buttons (works without JavaScript); every field has its label. -->
<#import "template.ftl" as layout>
<#import "buttons.ftl" as buttons>
<#import "urbanstack.ftl" as us>
<#assign username=us.attemptedUser in layout>
<@layout.registrationLayout displayMessage=!messagesPerField.existsError('totp'); section>
  <#if section = "header">
    ${msg("doLogIn")}
  <#elseif section = "form">
    <form id="kc-otp-login-form" class="${properties.kcFormClass!}" action="${url.loginAction}" method="post">
      <#if otpLogin.userOtpCredentials?size gt 1>
        <fieldset class="${properties.kcFormGroupClass!}">
          <legend class="${properties.kcFormLabelClass!}">${msg("urbanstackWhichAuthenticator")}</legend>
          <#list otpLogin.userOtpCredentials as credential>
            <div>
              <input type="radio" id="kc-otp-credential-${credential?index}" name="selectedCredentialId"
                     value="${credential.id}" <#if credential.id == (otpLogin.selectedCredentialId!'')>checked</#if>>
              <label for="kc-otp-credential-${credential?index}">${credential.userLabel}</label>
            </div>
          </#list>
        </fieldset>
      <#else>
        <input type="hidden" name="selectedCredentialId" value="${otpLogin.selectedCredentialId!''}">
      </#if>
      <@us.codeField name="otp" errorField="totp" label=msg("loginOtpOneTime") required=true autofocus=true
                     autocomplete="one-time-code" numeric=true/>
      <@buttons.loginButton />
    </form>
  </#if>
</@layout.registrationLayout>
