"""Core package of the Flux-on-AKS Functions app: Flux manifest generation, git, Kubernetes,
Key Vault and the bootstrap runner. Heavy dependencies are imported lazily inside the functions
that need them, so importing this package stays cheap (cold start)."""
