"""Running trained models over spectra and whole stores."""
