"""The weekly leadership report: what it says (weekly), how its targets are judged
(verdict), where the campaign stands (stage), its at-risk list and escalations (at_risk),
its case-study candidates and drafts (stories), its charts (charts), its files and Prefect
artifact (render) and its one-time delivery to leadership (delivery)."""
