"""The campaign's success metrics, computed in SQL as of a day, per segment, beside their targets.

``compute.compute_metrics(engine, config=..., as_of=...)`` runs four aggregate queries (no
Python loop over events, deliveries or accounts):

1. the *campaign query*: the accepted deliveries, each with its one row of
   ``delivery_event_summary`` (when each kind of event the metrics count first happened to
   it: delivered, opened, clicked, spam report, unsubscribe, hard bounce; kept by the
   database as events come in), roll up per account, then per segment beside everything
   else known of the account (lifecycle, migration, performance focus, adoption, latest
   performance report); no pass over the events themselves;
2. support tickets per segment and category;
3. survey responses per segment;
4. the segmentation day.

Only what happened by the end of ``as_of`` (UTC) counts: deliveries by ``sent_at``, events by
``occurred_at``, tickets, survey answers and reports by their own timestamps, adoption and
migration by their day. An account's segment is the one of the latest segmentation on or
before ``as_of``; rows of accounts outside it (churned since, or imported after) count in
``all`` and in ``unsegmented``. A ratio whose denominator is 0 is ``None`` ("no data").

The modules: ``results`` (what a computation returns and the statuses), ``definitions``
(what each metric means and how a value stands against its target), ``queries`` (the SQL),
``compute`` (running it and turning counts into values), ``snapshot`` (the daily
``metric_snapshot`` rows), ``display`` (how values and targets are printed).
"""
