// flux-aks-functions on Azure: `azd up` (or `az deployment sub create`) creates everything the app
// needs, in the layout of the Azure-Samples Functions quickstarts (functions-quickstart-python-http-azd,
// functions-quickstart-python-azd-timer, the Event Hubs one): main.bicep at subscription scope, one
// resource group, modules under app/ and core/. Plain resources, not AVM registry modules, so that
// Checkov sees every property it checks (see README "Deploy to Azure").
//
// One user-assigned managed identity is used for everything: storage (identity-based connections only,
// no account keys), Key Vault (RBAC), Event Hubs (local auth disabled), Application Insights (Entra
// auth), the AKS clusters in aksClusterIds and the workload identities in workloadIdentityIds. Role
// assignments are in app/rbac.bicep, app/aks-access.bicep and app/identity-access.bicep. No secret is a parameter, an app setting or an output.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; used in resource names and the azd-env-name tag.')
param environmentName string

@minLength(1)
@description('Region of every resource. It must offer the Flex Consumption plan: az functionapp list-flexconsumption-locations.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Optional resource group name (default rg-<environmentName>).')
param resourceGroupName string = ''

@description('Object ID of the person deploying (azd sets AZURE_PRINCIPAL_ID). Gets Key Vault Secrets Officer on the vault (to store PATs and kubeconfigs), Storage Blob Data Contributor and Storage Table Data Contributor on the account (routing file, CLI registry). Empty: none.')
param principalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
@description('Type of principalId.')
param principalType string = 'User'

@description('Resource IDs of the AKS clusters the app bootstraps and rotates (/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.ContainerService/managedClusters/<name>), in any resource group or subscription. The identity gets Azure Kubernetes Service Cluster User Role and Azure Kubernetes Service RBAC Cluster Admin on each.')
param aksClusterIds array = []

@description('Resource IDs of the user-assigned managed identities that bootstraps with workloadIdentity.federate write federated identity credentials on (/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>), in any resource group or subscription. The app identity gets Managed Identity Contributor on each.')
param workloadIdentityIds array = []

@description('Principal (object) IDs of the identities that the clusters\' notification-controllers use (workload identity, Flux >= 2.6): Azure Event Hubs Data Sender on the hub.')
param clusterIdentityPrincipalIds array = []

@description('Optional resource ID of a subnet delegated to Microsoft.App/environments: the app\'s outbound traffic goes through it, so private AKS API servers and private Azure DevOps Server hosts are reachable.')
param vnetIntegrationSubnetId string = ''

@description('Optional Entra ID application (client) ID: App Service Authentication validates its tokens in front of the app, and AUTH_REQUIRED_ROLE is set to authRequiredRole.')
param authClientId string = ''

@description('App role that callers of the operation endpoints need when authClientId is set (app setting AUTH_REQUIRED_ROLE).')
param authRequiredRole string = 'Flux.Admin'

@description('App setting GIT_ALLOWED_HOSTS: the Git hosts a credential may be sent to (comma-separated host, host:port, [v6], or *.example.com for one more DNS label; IP addresses and private hosts only as exact entries).')
param gitAllowedHosts string = 'dev.azure.com,ssh.dev.azure.com,*.visualstudio.com'

@description('App setting GIT_BEARER_TOKEN_HOSTS: the Git hosts the Function\'s Entra ID token may be sent to (Azure DevOps Services).')
param gitBearerTokenHosts string = 'dev.azure.com,*.visualstudio.com'

@description('App setting FLUX_ALLOWED_REGISTRIES: the image registries the bootstrap registry option may name (comma-separated; an entry covers repositories below it).')
param fluxAllowedRegistries string = 'ghcr.io/fluxcd'

@description('SSH bootstraps without privateKeySecret generate their key into Key Vault: grants the app Key Vault Secrets Officer on the vault (false: Secrets User only, and SSH bootstraps must name their key).')
param sshKeyGeneration bool = true

@description('Name of the Event Hub that the clusters\' Flux Providers publish to.')
param eventHubName string = 'flux-events'

@description('The app\'s consumer group on that hub.')
param eventHubConsumerGroupName string = 'flux-notify'

@minValue(1)
@maxValue(32)
@description('Partitions of the hub (fixed after creation on the Standard tier).')
param eventHubPartitionCount int = 4

@minValue(40)
@maxValue(1000)
@description('Flex Consumption scale-out limit.')
param maximumInstanceCount int = 100

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentStorageContainerName = 'app-package-${take(functionAppName, 32)}-${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}'

// What the app stores (names as the app-setting defaults in local.settings.json.example).
var registryTable = 'fluxclusters'
var dedupeTable = 'fluxnotifydedupe'
var deadLetterContainer = 'flux-notify-deadletter'
var configContainer = 'flux-config'
// Fleet operations: the work queue the queue trigger reads (the host moves messages that used every
// attempt to <queue>-poison, read by the fleet_poison trigger) and the table of operation state.
var fleetQueue = 'flux-fleet'
var fleetTable = 'fluxfleet'

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: empty(resourceGroupName) ? '${abbrs.resourcesResourceGroups}${environmentName}' : resourceGroupName
  location: location
  tags: tags
}

module identity 'core/identity/user-assigned-identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'core/monitor/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'core/storage/storage-account.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    containers: [
      deploymentStorageContainerName
      deadLetterContainer
      configContainer
    ]
    tables: [
      registryTable
      dedupeTable
      fleetTable
    ]
    queues: [
      fleetQueue
      '${fleetQueue}-poison'
    ]
  }
}

module keyVault 'core/security/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
  }
}

module eventHubs 'app/eventhubs.bicep' = {
  name: 'eventhubs'
  scope: rg
  params: {
    name: '${abbrs.eventHubNamespaces}${resourceToken}'
    location: location
    tags: tags
    eventHubName: eventHubName
    consumerGroupName: eventHubConsumerGroupName
    partitionCount: eventHubPartitionCount
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentStorageContainerName: deploymentStorageContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultUri: keyVault.outputs.uri
    eventHubNamespaceName: eventHubs.outputs.namespaceName
    eventHubName: eventHubs.outputs.eventHubName
    eventHubConsumerGroupName: eventHubs.outputs.consumerGroupName
    registryTable: registryTable
    dedupeTable: dedupeTable
    fleetQueue: fleetQueue
    fleetTable: fleetTable
    deadLetterContainer: deadLetterContainer
    routingLocation: 'blob:${configContainer}/routing.yaml'
    gitAllowedHosts: gitAllowedHosts
    gitBearerTokenHosts: gitBearerTokenHosts
    fluxAllowedRegistries: fluxAllowedRegistries
    authClientId: authClientId
    authRequiredRole: authRequiredRole
    vnetIntegrationSubnetId: vnetIntegrationSubnetId
    maximumInstanceCount: maximumInstanceCount
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    identityPrincipalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    eventHubNamespaceName: eventHubs.outputs.namespaceName
    eventHubName: eventHubs.outputs.eventHubName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    clusterIdentityPrincipalIds: clusterIdentityPrincipalIds
    userPrincipalId: principalId
    userPrincipalType: principalType
    sshKeyGeneration: sshKeyGeneration
  }
}

// One deployment at each cluster's own resource group (any subscription): the role assignments are
// scoped to the cluster itself. ID layout: /subscriptions/<2>/resourceGroups/<4>/providers/Microsoft.ContainerService/managedClusters/<8>
module aksAccess 'app/aks-access.bicep' = [for (clusterId, i) in aksClusterIds: {
  name: take('aks-access-${i}-${uniqueString(clusterId)}', 64)
  scope: resourceGroup(split(clusterId, '/')[2], split(clusterId, '/')[4])
  params: {
    clusterName: last(split(clusterId, '/'))
    identityPrincipalId: identity.outputs.principalId
  }
}]

// One deployment at each workload identity's own resource group: Managed Identity Contributor on the identity
// itself, for the federated identity credentials. ID layout as above, .../userAssignedIdentities/<8>
module identityAccess 'app/identity-access.bicep' = [for (identityId, i) in workloadIdentityIds: {
  name: take('identity-access-${i}-${uniqueString(identityId)}', 64)
  scope: resourceGroup(split(identityId, '/')[2], split(identityId, '/')[4])
  params: {
    identityName: last(split(identityId, '/'))
    identityPrincipalId: identity.outputs.principalId
  }
}]

// Names and endpoints only (azd stores outputs in .azure/<env>/.env); nothing secret.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = api.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = api.outputs.uri
output AZURE_CLIENT_ID string = identity.outputs.clientId
output SERVICE_API_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output KEY_VAULT_URL string = keyVault.outputs.uri
output KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output EVENTHUB_NAMESPACE string = eventHubs.outputs.namespaceName
output EVENTHUB_FULLY_QUALIFIED_NAMESPACE string = '${eventHubs.outputs.namespaceName}.servicebus.windows.net'
output EVENTHUB_NAME string = eventHubs.outputs.eventHubName
