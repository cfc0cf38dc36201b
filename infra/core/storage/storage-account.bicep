// The app's storage account: AzureWebJobsStorage (host locks, timer status, Event Hubs checkpoints),
// the Flex deployment package, and the app's own tables and containers. Identity-based access only:
// shared keys are disabled, so no connection string with a key exists anywhere. API version as
// Azure-Samples/functions-quickstart-dotnet-azd infra/core/storage/storage-account.bicep.
param name string
param location string = resourceGroup().location
param tags object = {}
@description('Blob containers to create.')
param containers array = []
@description('Tables to create.')
param tables array = []
@description('Queues to create.')
param queues array = []

resource storage 'Microsoft.Storage/storageAccounts@2023-01-01' = {
  // checkov:skip=CKV_AZURE_35: the Function (Flex Consumption without private endpoints) reaches its storage over the public endpoint; shared keys are disabled, so access is Entra-only
  // checkov:skip=CKV_AZURE_59: as CKV_AZURE_35: public endpoint, Entra-only access (allowSharedKeyAccess false, no public blobs)
  // checkov:skip=CKV_AZURE_206: LRS as the Functions quickstarts; ZRS is not offered in every Flex Consumption region
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    dnsEndpointType: 'Standard'
    minimumTlsVersion: 'TLS1_2'
    publicNetworkAccess: 'Enabled'
    supportsHttpsTrafficOnly: true
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobServices 'Microsoft.Storage/storageAccounts/blobServices@2023-01-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource blobContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-01-01' = [for container in containers: {
  parent: blobServices
  name: container
  properties: {
    publicAccess: 'None'
  }
}]

resource tableServices 'Microsoft.Storage/storageAccounts/tableServices@2023-01-01' = {
  parent: storage
  name: 'default'
}

resource storageTables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-01-01' = [for table in tables: {
  parent: tableServices
  name: table
}]

resource queueServices 'Microsoft.Storage/storageAccounts/queueServices@2023-01-01' = {
  parent: storage
  name: 'default'
}

resource storageQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-01-01' = [for queue in queues: {
  parent: queueServices
  name: queue
}]

output name string = storage.name
output id string = storage.id
output primaryEndpoints object = storage.properties.primaryEndpoints
