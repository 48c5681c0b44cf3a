"""Scale-out: one phase sent by many senders on Prefect's work pool under one global rate.

``rate`` (the Prefect global rate limit every request takes its recipients from), ``senders``
(what each sender did: counts and rates for the parent run's artifact and ``herald status``),
``cluster`` (the local topology: a Prefect server on Postgres and N workers).
"""
