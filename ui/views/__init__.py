"""pyqtgraph views: waveform, spectrograms and the scrolling playback spectrogram."""
