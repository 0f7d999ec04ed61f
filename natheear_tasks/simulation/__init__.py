"""Scene simulation: rooms (``rooms``), HRTFs (``hrtf``), RIR rendering (``rirs``) and banks
(``rirbank``), noise (``noise``), and mixing a dry clip into a scene (``mix``, shared with
training)."""
