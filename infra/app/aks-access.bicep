// The app's identity on one AKS cluster, deployed at the cluster's resource group (main.bicep loops over
// aksClusterIds, which may be in other resource groups or subscriptions). Both assignments are scoped to
// the cluster itself:
// - Azure Kubernetes Service Cluster User Role: listClusterUserCredential, i.e. the server address and
//   CA of the cluster (no static credential; the app authenticates with an Entra token for the AKS
//   server app 6dae42f8-4368-4678-94ff-3960e28e3630);
// - Azure Kubernetes Service RBAC Cluster Admin: the Kubernetes API with Azure RBAC for Kubernetes
//   authorization (bootstrap applies CRDs, namespaces and cluster roles; rotation writes Secrets).
// Clusters with Kubernetes RBAC instead of Azure RBAC need a ClusterRoleBinding to the identity's
// object ID instead of the second role (README "Deploy to Azure").
// The existing-resource API version is a GA one from the template reference
// (learn.microsoft.com/azure/templates/microsoft.containerservice/2024-02-01/managedclusters).
param clusterName string
param identityPrincipalId string

var roles = {
  aksClusterUser: '4abbcc35-e782-43d8-92c5-2d3f1bd2253f'
  aksRbacClusterAdmin: 'b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b'
}

resource cluster 'Microsoft.ContainerService/managedClusters@2024-02-01' existing = {
  name: clusterName
}

resource aksClusterUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(cluster.id, identityPrincipalId, roles.aksClusterUser)
  scope: cluster
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.aksClusterUser)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource aksRbacClusterAdmin 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(cluster.id, identityPrincipalId, roles.aksRbacClusterAdmin)
  scope: cluster
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.aksRbacClusterAdmin)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}
