// Log Analytics workspace and workspace-based Application Insights, both with local (key) auth off:
// the app sends telemetry with its managed identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING,
// role Monitoring Metrics Publisher). API versions as Azure-Samples/azure-functions-flex-consumption-samples
// (IaC/bicep/core/monitor/loganalytics.bicep, starters/http/dotnet/infra/core/monitor/applicationinsights.bicep).
param logAnalyticsName string
param applicationInsightsName string
param location string = resourceGroup().location
param tags object = {}
@minValue(30)
param retentionInDays int = 30

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2025-02-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    retentionInDays: retentionInDays
    sku: {
      name: 'PerGB2018'
    }
    features: {
      disableLocalAuth: true
    }
  }
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
  }
}

output logAnalyticsName string = logAnalytics.name
output applicationInsightsName string = applicationInsights.name
