"""Azure service ports: :mod:`.keyvault` (secrets through ``SecretClient``) and :mod:`.devops`
(Azure DevOps REST: commit statuses)."""
