"""Plain logic: imports neither dagster nor google.genai."""
