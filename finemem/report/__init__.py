"""Reports: terminal tables and plots written to a run's report/ folder."""
