"""The Gemini batch backends behind one resource."""
