// The app's one user-assigned managed identity (API version as Azure-Samples/function-eventhub-vnet
// infra/core/security/userAssignedIdentity.bicep).
param name string
param location string = resourceGroup().location
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output resourceId string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
