// The Event Hub the fleet's Flux notification-controllers publish to (Provider type azureeventhub),
// and the app's own consumer group on it. Local (SAS) auth is disabled: senders and the app use
// Entra tokens (roles Azure Event Hubs Data Sender / Data Receiver on the hub, app/rbac.bicep).
// Standard tier: Basic allows only the $Default consumer group. API version as
// MadhuraBharadwaj-MSFT/functions-quickstart-python-azd-evhub infra/app/eventhubs.bicep.
param name string
param location string = resourceGroup().location
param tags object = {}
param eventHubName string
param consumerGroupName string
param partitionCount int = 4
@description('Days an event stays readable: how long forwarding may be down without losing anything (Standard: at most 7).')
@minValue(1)
@maxValue(7)
param retentionInDays int = 7

resource namespace 'Microsoft.EventHub/namespaces@2023-01-01-preview' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
    capacity: 1
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    isAutoInflateEnabled: false
  }
}

resource eventHub 'Microsoft.EventHub/namespaces/eventhubs@2023-01-01-preview' = {
  parent: namespace
  name: eventHubName
  properties: {
    partitionCount: partitionCount
    messageRetentionInDays: retentionInDays
  }
}

resource consumerGroup 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2023-01-01-preview' = {
  parent: eventHub
  name: consumerGroupName
  properties: {
    userMetadata: 'flux-aks-functions notification forwarding (flux_events_eventhub)'
  }
}

output namespaceName string = namespace.name
output namespaceId string = namespace.id
output eventHubName string = eventHub.name
output consumerGroupName string = consumerGroup.name
