<#-- Urban Stack: setting up the authenticator app. The steps, the QR code (or the key to type),
     then the code and the device name, each field with its own label. -->
<#import "template.ftl" as layout>
<#import "password-commons.ftl" as passwordCommons>
<#import "urbanstack.ftl" as us>
<#assign username=us.attemptedUser in layout>
<@layout.registrationLayout displayRequiredFields=false displayMessage=!messagesPerField.existsError('totp','userLabel'); section>
  <#if section = "header">
    ${msg("loginTotpTitle")}
  <#elseif section = "form">
    <ol id="kc-totp-settings">
      <li>
        <p>${msg("loginTotpStep1")}</p>
        <ul id="kc-totp-supported-apps">
          <#list totp.supportedApplications as app><li>${msg(app)}</li></#list>
        </ul>
      </li>
      <#if mode?? && mode = "manual">
        <li>
          <p>${msg("loginTotpManualStep2")}</p>
          <p><code id="kc-totp-secret-key">${totp.totpSecretEncoded}</code></p>
          <p><a href="${totp.qrUrl}" id="mode-barcode">${msg("loginTotpScanBarcode")}</a></p>
        </li>
        <li>
          <p>${msg("loginTotpManualStep3")}</p>
          <ul>
            <li id="kc-totp-type">${msg("loginTotpType")}: ${msg("loginTotp." + totp.policy.type)}</li>
            <li id="kc-totp-algorithm">${msg("loginTotpAlgorithm")}: ${totp.policy.getAlgorithmKey()}</li>
            <li id="kc-totp-digits">${msg("loginTotpDigits")}: ${totp.policy.digits}</li>
            <#if totp.policy.type = "totp">
              <li id="kc-totp-period">${msg("loginTotpInterval")}: ${totp.policy.period}</li>
            <#else>
              <li id="kc-totp-counter">${msg("loginTotpCounter")}: ${totp.policy.initialCounter}</li>
            </#if>
          </ul>
        </li>
      <#else>
        <li>
          <p>${msg("loginTotpStep2")}</p>
          <img id="kc-totp-secret-qr-code" src="data:image/png;base64, ${totp.totpSecretQrCode}" alt="${msg("urbanstackQrAlt")}">
          <p><a href="${totp.manualUrl}" id="mode-manual">${msg("loginTotpUnableToScan")}</a></p>
        </li>
      </#if>
      <li>
        <p>${msg("loginTotpStep3")}</p>
        <p>${msg("loginTotpStep3DeviceName")}</p>
      </li>
    </ol>

    <form action="${url.loginAction}" class="${properties.kcFormClass!}" id="kc-totp-settings-form" method="post">
      <@us.codeField name="totp" label=msg("authenticatorCode") required=true autocomplete="one-time-code" numeric=true/>
      <input type="hidden" id="totpSecret" name="totpSecret" value="${totp.totpSecret}">
      <#if mode??><input type="hidden" id="mode" name="mode" value="${mode}"></#if>
      <@us.codeField name="userLabel" label=msg("loginTotpDeviceName") required=(totp.otpCredentials?size gte 1)/>
      <div class="${properties.kcFormGroupClass!}">
        <@passwordCommons.logoutOtherSessions/>
      </div>
      <div class="${properties.kcFormGroupClass!}">
        <input type="submit" id="saveTOTPBtn" value="${msg("doSubmit")}"
               class="${properties.kcButtonClass!} ${properties.kcButtonPrimaryClass!} ${properties.kcButtonBlockClass!} ${properties.kcButtonLargeClass!}">
        <#if isAppInitiatedAction??>
          <button type="submit" id="cancelTOTPBtn" name="cancel-aia" value="true"
                  class="${properties.kcButtonClass!} ${properties.kcButtonDefaultClass!} ${properties.kcButtonLargeClass!}">${msg("doCancel")}</button>
        </#if>
      </div>
    </form>
  </#if>
</@layout.registrationLayout>
