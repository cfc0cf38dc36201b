// The vault that holds the PATs, kubeconfigs, webhook URLs and HMAC keys the app reads by name.
// RBAC authorization (no access policies), soft delete and purge protection (a deleted secret can be
// recovered for softDeleteRetentionInDays and never purged early). API version as
// Azure-Samples/function-eventhub-vnet infra/core/security/keyvault.bicep.
param name string
param location string = resourceGroup().location
param tags object = {}
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

resource vault 'Microsoft.KeyVault/vaults@2022-07-01' = {
  // checkov:skip=CKV_AZURE_109: the Function (Flex Consumption, not a trusted service) reaches the vault over its public endpoint; access is Entra-only (RBAC) with the app's identity; add a private endpoint and deny by default for a private deployment
  // checkov:skip=CKV_AZURE_189: as CKV_AZURE_109: the app and the operator storing secrets reach the vault over its public endpoint
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
