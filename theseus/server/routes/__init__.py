"""HTTP routes, one module per resource. Thin: parse → call the writer or a view → answer."""
