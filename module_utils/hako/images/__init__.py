"""Images: the content-addressed store and the ways images are made."""
