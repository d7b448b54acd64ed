"""What a person reads about a model: the HTML run report and the held-out evaluations (per photo
and per claim). Above inference: it scores held-out photos with the shipped model."""
