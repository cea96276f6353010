"""The HTML timeline report: ``data`` turns a run into lanes, marks and paths; ``render`` draws
them as one self-contained page."""
