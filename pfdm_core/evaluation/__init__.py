"""Evaluation floor: metrics (classifier FID / KID, precision / recall), cached metric classifiers, one client's
table, the paired comparison of two methods over seeds (`compare`), the Inception FID, downstream classifiers, and the figures' style (`plotting`)."""
