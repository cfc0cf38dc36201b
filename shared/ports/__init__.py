"""Ports: the app's adapters to the systems it talks to. Each job (bootstrap, rotation, notify)
uses them; none of them knows about a job.

* :mod:`.git`: a working clone of one branch over smart HTTP(S), on dulwich;
* :mod:`.kube`: a Kubernetes cluster through the official client (server-side apply, Secrets);
* :mod:`.oci`: Flux's manifests artifact from an OCI registry;
* :mod:`.azure`: Azure services (Key Vault secrets, Azure DevOps REST).
"""
