// The Function App: Flex Consumption (FC1), Linux, Python 3.11, one user-assigned identity for
// everything, and every app setting the code reads (tests/test_infra.py collects them from the code and
// fails when one is missing here). Values are names, URLs and tunables, never secrets: storage, Event
// Hubs, Key Vault and Application Insights are reached with the identity. Layout and API versions as
// Azure-Samples/functions-quickstart-python-http-azd (infra/core/host/functions-flexconsumption.bicep,
// config 'appsettings') and Azure-Samples/azure-functions-flex-consumption-samples IaC/bicep
// (Microsoft.Web/serverfarms and sites @2024-04-01).
param name string
param planName string
param location string = resourceGroup().location
param tags object = {}
param serviceName string = 'api'

param identityId string
param identityClientId string
param storageAccountName string
param deploymentStorageContainerName string
param applicationInsightsName string
param keyVaultUri string
param eventHubNamespaceName string
param eventHubName string
param eventHubConsumerGroupName string
param registryTable string
param dedupeTable string
@description('FLEET_QUEUE: the fleet work queue (its <name>-poison queue exists too).')
param fleetQueue string
@description('FLEET_TABLE: fleet operation state.')
param fleetTable string
param deadLetterContainer string
@description('NOTIFY_ROUTING: blob:<container>/<name> in this storage account (upload the routing file there).')
param routingLocation string
param gitAllowedHosts string
param gitBearerTokenHosts string
param fluxAllowedRegistries string
param authClientId string = ''
param authRequiredRole string = ''
param vnetIntegrationSubnetId string = ''
param instanceMemoryMB int = 2048
param maximumInstanceCount int = 100

resource stg 'Microsoft.Storage/storageAccounts@2023-01-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption zone redundancy exists only in regions with availability zones and is opt-in there; this control-plane app tolerates a zone outage (Event Hub keeps the events, the timer runs again, callers retry)
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

// Host storage and the app's tables/containers, identity-based (no AzureWebJobsStorage connection
// string); DefaultAzureCredential in the code picks the identity through AZURE_CLIENT_ID.
var identitySettings = {
  AZURE_CLIENT_ID: identityClientId
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__accountName: stg.name
  AzureWebJobsStorage__blobServiceUri: stg.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: stg.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: stg.properties.primaryEndpoints.table
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  KEY_VAULT_URL: keyVaultUri
}

// Bootstrap: the allowlists of the trust boundaries (credentials go only to these hosts; Flux only
// from these registries); FLUX_MANIFESTS / FLUX_CACHE_DIR empty = the default OCI artifact, temp dir.
var bootstrapSettings = {
  GIT_ALLOWED_HOSTS: gitAllowedHosts
  GIT_BEARER_TOKEN_HOSTS: gitBearerTokenHosts
  FLUX_ALLOWED_REGISTRIES: fluxAllowedRegistries
  FLUX_MANIFESTS: ''
  FLUX_CACHE_DIR: ''
  // AKS clusters named by resource ID: the ARM endpoint (empty = the SDK's, for AZURE_CLOUD: public Azure)
  // and how long a cluster's endpoint and CA are kept per instance
  AZURE_RESOURCE_MANAGER_ENDPOINT: ''
  AKS_ENDPOINT_CACHE_SECONDS: '600'
}

// Rotation (defaults of local.settings.json.example).
var rotationSettings = {
  REGISTRY_TABLE: registryTable
  ROTATION_SCHEDULE: '0 */10 * * * *'
  ROTATION_PAT_WARNING_DAYS: '7'
  ROTATION_PAT_WARNING_INTERVAL: '24h'
  ROTATION_TOKEN_MIN_REMAINING_MINUTES: '20'
  ROTATION_CONCURRENCY: '16'
}

// Notification forwarding: the Event Hub trigger's identity-based connection NOTIFY_EVENTHUB, and the
// same namespace/hub for the app's own events.
var notifySettings = {
  NOTIFY_EVENTHUB__fullyQualifiedNamespace: '${eventHubNamespaceName}.servicebus.windows.net'
  NOTIFY_EVENTHUB__credential: 'managedidentity'
  NOTIFY_EVENTHUB__clientId: identityClientId
  NOTIFY_EVENTHUB_NAME: eventHubName
  NOTIFY_EVENTHUB_CONSUMER_GROUP: eventHubConsumerGroupName
  NOTIFY_ROUTING: routingLocation
  NOTIFY_DEDUPE_TABLE: dedupeTable
  NOTIFY_DEADLETTER_CONTAINER: deadLetterContainer
  NOTIFY_MAX_ATTEMPTS: '5'
  NOTIFY_BACKOFF_BASE_SECONDS: '0.5'
  NOTIFY_BACKOFF_MAX_SECONDS: '30'
  NOTIFY_BATCH_BUDGET_SECONDS: '240'
  NOTIFY_CONCURRENCY: '32'
  NOTIFY_SECRET_TTL_SECONDS: '300'
  NOTIFY_DEDUPE_PURGE_INTERVAL_SECONDS: '60'
  NOTIFY_PUBLISH_TIMEOUT_SECONDS: '10'
}

// Fleets: work items on the queue (the fleet_worker trigger's %FLEET_QUEUE%, connection AzureWebJobsStorage,
// identity-based above) and operation state in the table.
var fleetSettings = {
  FLEET_QUEUE: fleetQueue
  FLEET_TABLE: fleetTable
  FLEET_STATUS_CONCURRENCY: '16'
}

// Entra ID in front of the operation endpoints (App Service Authentication, below).
var authSettings = empty(authClientId) ? {} : {
  AUTH_REQUIRED_ROLE: authRequiredRole
}

var appSettings = union(identitySettings, bootstrapSettings, rotationSettings, notifySettings, fleetSettings, authSettings)

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: the HTTP endpoints must be reachable by Flux's generic-hmac Providers and by operators; they are protected by function/admin keys, per-cluster HMAC and optionally Entra ID (authClientId)
  // checkov:skip=CKV_AZURE_17: callers (Flux notification-controller, operators' scripts) authenticate with keys, HMAC or Entra tokens, not client certificates
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero on demand; there is no fixed instance count to fail over between
  // checkov:skip=CKV_AZURE_213: Flex Consumption manages instance health itself and has no health check path setting
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    // Outbound traffic through the customer's subnet (delegated to Microsoft.App/environments) when given.
    virtualNetworkSubnetId: empty(vnetIntegrationSubnetId) ? null : vnetIntegrationSubnetId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${stg.properties.primaryEndpoints.blob}${deploymentStorageContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }

  // The settings as the site's appsettings config, as Azure-Samples/functions-quickstart-python-http-azd
  // (infra/core/host/functions-flexconsumption.bicep) sets them: an object, not a for-expression over
  // items(), because several values (storage endpoints, the App Insights connection string) are only
  // known during the deployment and Bicep requires a for-expression's array at its start (BCP178).
  resource configAppSettings 'config' = {
    // Checkov reads every Microsoft.Web/sites/config as the site's 'web' config; this is 'appsettings', which holds none of these properties:
    // checkov:skip=CKV_AZURE_63: not the web config (no httpLoggingEnabled here); the Functions host logs requests to Application Insights
    // checkov:skip=CKV_AZURE_65: not the web config (no detailedErrorLoggingEnabled here); errors go to Application Insights
    // checkov:skip=CKV_AZURE_66: not the web config (no requestTracingEnabled here); failed invocations are traced in Application Insights
    // checkov:skip=CKV_AZURE_80: not the web config; a Python app has no .NET Framework version
    // checkov:skip=CKV_AZURE_88: not the web config; Flex Consumption deploys from the blob container of functionAppConfig.deployment, not Azure Files
    // checkov:skip=CKV_AZURE_13: not the web config; App Service Authentication is the authsettingsV2 config of auth.bicep (with authClientId)
    // checkov:skip=CKV_AZURE_222: not the site; public network access is a site property, skipped there with its reason
    name: 'appsettings'
    properties: appSettings
  }
}

// App Service Authentication with Entra ID in front of the app when authClientId is given (auth.bicep).
module auth 'auth.bicep' = if (!empty(authClientId)) {
  name: '${serviceName}-auth'
  params: {
    siteName: site.name
    clientId: authClientId
  }
}

output name string = site.name
output uri string = 'https://${site.properties.defaultHostName}'
