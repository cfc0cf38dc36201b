// App Service Authentication (Easy Auth) with Entra ID for the Function App `siteName`, deployed by
// api.bicep only when authClientId is given. API version as the site (2024-04-01).
param siteName string
@description('Application (client) ID of the Entra app registration whose tokens are accepted.')
param clientId string

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: siteName
}

// Tokens are validated for that app registration and passed to the app as X-MS-CLIENT-PRINCIPAL; the app
// requires the app role AUTH_REQUIRED_ROLE on the operation endpoints. Unauthenticated requests are
// let through to the app (AllowAnonymous) because the generic-hmac receiver POST
// /api/flux/events/{cluster} is called by Flux, which has no Entra token, and checks its own HMAC.
// No client secret: the app only validates bearer tokens, it never signs users in.
resource authSettingsV2 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: the check reads authsettings v1 properties.enabled; this authsettingsV2 resource turns authentication on with platform.enabled: true
  // checkov:skip=CKV_AZURE_63: httpLoggingEnabled is a property of the site's 'web' config, not of authsettingsV2 (checkov applies it to every sites/config); logs go to Application Insights
  // checkov:skip=CKV_AZURE_65: detailedErrorLoggingEnabled is a property of the 'web' config, not of authsettingsV2
  // checkov:skip=CKV_AZURE_66: requestTracingEnabled is a property of the 'web' config, not of authsettingsV2
  // checkov:skip=CKV_AZURE_80: netFrameworkVersion is a property of the 'web' config, not of authsettingsV2; the app is Python
  // checkov:skip=CKV_AZURE_88: azureStorageAccounts is a property of the 'web' config, not of authsettingsV2
  // checkov:skip=CKV_AZURE_222: publicNetworkAccess is a property of the site, checked there (api.bicep, skipped with its reason)
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: false
      unauthenticatedClientAction: 'AllowAnonymous'
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: clientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            clientId
            'api://${clientId}'
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

