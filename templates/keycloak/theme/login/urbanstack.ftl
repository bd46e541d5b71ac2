<#-- Urban Stack's pieces for the login pages. Our pages import this file and put
     `attemptedUser` in place of the layout's read-only user name:
         <#assign username=us.attemptedUser in layout>
     so that field has a label of its own, and starting over is a link (no JavaScript). -->
<#macro attemptedUser>
  <div class="${properties.kcFormGroupClass}">
    <div class="${properties.kcFormGroupLabelClass}">
      <label for="kc-attempted-username" class="${properties.kcFormLabelClass}">
        <span class="${properties.kcFormLabelTextClass}">${msg("urbanstackSignedInAs")}</span>
      </label>
    </div>
    <div class="${properties.kcInputGroup}">
      <div class="${properties.kcInputGroupItemClass} ${properties.kcFill}">
        <span class="${properties.kcInputClass} ${properties.kcFormReadOnlyClass}">
          <input id="kc-attempted-username" value="${auth.attemptedUsername}" readonly>
        </span>
      </div>
      <div class="${properties.kcInputGroupItemClass}">
        <a id="reset-login" class="${properties.kcFormPasswordVisibilityButtonClass}" href="${url.loginRestartFlowUrl}">${msg("urbanstackOtherUser")}</a>
      </div>
    </div>
  </div>
</#macro>

<#-- A text field of the one-time-code pages, its label tied to it by id. -->
<#macro codeField name label errorField=name required=false autofocus=false autocomplete="off" numeric=false>
  <#assign problem = messagesPerField.getFirstError(errorField)>
  <div class="${properties.kcFormGroupClass}">
    <div class="${properties.kcFormGroupLabelClass}">
      <label for="${name}" class="${properties.kcFormLabelClass}">
        <span class="${properties.kcFormLabelTextClass}">${label}</span>
        <#if required><span class="${properties.kcInputRequiredClass}" aria-hidden="true">&#42;</span></#if>
      </label>
    </div>
    <span class="${properties.kcInputClass} <#if problem?has_content>${properties.kcError}</#if>">
      <input id="${name}" name="${name}" type="text" autocomplete="${autocomplete}"
             <#if numeric>inputmode="numeric"</#if> <#if required>required</#if> <#if autofocus>autofocus</#if>
             <#if problem?has_content>aria-invalid="true" aria-describedby="input-error-${name}"</#if>>
    </span>
    <#if problem?has_content>
      <div class="${properties.kcFormHelperTextClass}" aria-live="polite">
        <span id="input-error-${name}" class="${properties.kcInputErrorMessageClass}">${kcSanitize(problem)?no_esc}</span>
      </div>
    </#if>
  </div>
</#macro>
