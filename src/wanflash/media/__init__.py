"""Media: PyAV encoding of frames (and audio) to MP4/WEBM/MOV, and probing of outputs and inputs."""
