"""Scale-out on Ray (the optional extra ``cardamage[ray]``): the only package that imports Ray.

``predict`` scores photos as Ray Data stages (decode, model actors, decisions) and writes the
rows with Ray's writers; ``features`` extracts training's cached features on Ray actors.
"""
