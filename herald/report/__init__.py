"""The weekly leadership report: what it says (weekly), its at-risk list (at_risk), its
charts (charts), its files (render) and its one-time delivery to leadership (delivery)."""
