"""The fleet job: bootstrap and upgrade many clusters asynchronously, and show the fleet.

:mod:`.operations` accepts an operation (checked whole before anything is stored), queues one work
item per cluster on an Azure Storage queue (:mod:`shared.ports.azure.queue`) and moves it through its
waves; :mod:`.store` keeps the state in Table storage; :mod:`.worker` is the queue trigger's work (one
cluster per message, leases, retries, poison messages); :mod:`.upgrade` re-renders a registered
cluster's components at a new version; :mod:`.status` reads every registered cluster's Flux;
:mod:`.events` is where the app's own events go out.
"""
