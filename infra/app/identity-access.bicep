// The app's identity on one user-assigned managed identity that a bootstrap with workloadIdentity.federate
// writes federated identity credentials on (main.bicep loops over workloadIdentityIds, which may be in other
// resource groups or subscriptions). Managed Identity Contributor, scoped to that identity alone: read it
// (its client ID is checked against the request's) and create or update its federatedIdentityCredentials
// (Microsoft.ManagedIdentity/userAssignedIdentities/*). Not needed when the credentials are made by hand
// (federate: false).
param identityName string
param identityPrincipalId string

var roles = {
  managedIdentityContributor: 'e40ec5ca-96e0-45a2-b4ff-59039f2c2b59'
}

resource workloadIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: identityName
}

resource managedIdentityContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workloadIdentity.id, identityPrincipalId, roles.managedIdentityContributor)
  scope: workloadIdentity
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.managedIdentityContributor)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}
