"""A cluster of real machines, set up over SSH: ``theseus cluster bootstrap|status|teardown``.

The hosts file (``hosts``), where things live on a host (``layout``), what a host is like
(``probe`` on the host, ``facts`` here), the plan (``plan``, pure), the services and their
systemd units or supervisor (``services``, ``keeper``), SSH (``ssh``), the wheelhouse and the
workstation's state (``wheelhouse``, ``workstation``), carrying it out (``run``) and the
reverse (``teardown``). Kept light: ``keeper`` and ``hostcheck`` run on the hosts as
``python -m theseus.provision.<module>``.
"""
