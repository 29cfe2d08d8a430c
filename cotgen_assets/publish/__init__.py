"""Reports, traces, previews, the export and the Hub: plain logic on top of core."""
