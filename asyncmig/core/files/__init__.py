"""Local file formats: backup data files, manifests, durable writes."""
