"""Bokeh figures shared by the views: the spectrum figure and the corner plot."""
