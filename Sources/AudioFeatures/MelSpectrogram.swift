import Foundation

/// The 80-bin log-mel front end of Wav2Lip-style lip-sync models (Wav2Lip's `audio.py` with its
/// `hparams`, which call librosa 0.7 with its defaults), for 16 kHz mono input:
///
///     y      = x[n] − 0.97·x[n−1]  (y[0] = x[0])                  pre-emphasis
///     D      = STFT(y): n_fft 800, hop 200, periodic Hann window of 800,
///              centred frames (the signal reflect-padded by 400 on both sides)
///     M      = mel_basis · |D|     80 Slaney-style triangular filters, 55–7600 Hz, each
///                                  normalised to unit area (librosa `norm='slaney'`), magnitude
///                                  (not power) spectrum
///     S_db   = 20·log10(max(1e-5, M)) − 20                         min_level_db −100, ref_level_db 20
///     S      = clip(8·(S_db + 100)/100 − 4, −4, 4)                 symmetric normalisation
///
/// So values lie in [−4, 4] and silence gives the floor, −4 (``floor``). A signal of n samples
/// gives `1 + n / 200` frames (80 per second); frame m is centred on sample 200·m.
package struct MelSpectrogram: Sendable {
    package static let sampleRate = 16000
    package static let fftSize = 800
    package static let hopLength = 200
    package static let windowLength = 800
    package static let melBins = 80
    package static let fMin = 55.0
    package static let fMax = 7600.0
    package static let preemphasis = 0.97
    /// The value of silence (and of every frame beyond the audio).
    package static let floor: Float = -4

    private let fft = RealFFT(count: fftSize)
    private let window: [Double]
    /// Per mel bin: first FFT bin and weights (the non-zero part of the filter).
    private let filters: [(first: Int, weights: [Double])]

    package init() {
        let n = MelSpectrogram.windowLength
        window = (0..<n).map { 0.5 - 0.5 * cos(2 * Double.pi * Double($0) / Double(n)) }
        filters = MelSpectrogram.slaneyFilters()
    }

    /// Log-mel frames of `samples` (16 kHz mono). `firstSample` is the position of `samples[0]`
    /// in the whole track, a multiple of the hop (200), so frame numbers stay on the track's grid;
    /// frames near the ends of a window cut from a longer track see reflect padding instead of
    /// their real neighbours, so such windows should carry a margin of ≥ 400 samples.
    package func compute(_ samples: [Float], firstSample: Int = 0) -> LogMel {
        precondition(firstSample % MelSpectrogram.hopLength == 0, "firstSample must be a multiple of the hop")
        let hop = MelSpectrogram.hopLength, nfft = MelSpectrogram.fftSize, pad = nfft / 2
        let bins = MelSpectrogram.melBins
        guard !samples.isEmpty else { return LogMel(frames: 0, values: [], firstFrame: firstSample / hop) }
        // Pre-emphasis, then reflect padding (numpy 'reflect': the edge sample is not repeated).
        let n = samples.count
        var y = [Double](repeating: 0, count: n)
        y[0] = Double(samples[0])
        for i in 1..<n { y[i] = Double(samples[i]) - MelSpectrogram.preemphasis * Double(samples[i - 1]) }
        var padded = [Double](repeating: 0, count: n + 2 * pad)
        for i in 0..<(n + 2 * pad) { padded[i] = y[MelSpectrogram.reflect(i - pad, n)] }
        let frames = 1 + n / hop
        var values = [Float](repeating: 0, count: frames * bins)
        var frame = [Double](repeating: 0, count: nfft)
        var mags: [Double] = []
        for f in 0..<frames {
            let start = f * hop
            for i in 0..<nfft { frame[i] = padded[start + i] * window[i] }
            frame.withUnsafeBufferPointer { fft.magnitudes($0, into: &mags) }
            for (b, filter) in filters.enumerated() {
                var acc = 0.0
                for (j, w) in filter.weights.enumerated() { acc += w * mags[filter.first + j] }
                values[f * bins + b] = MelSpectrogram.normalise(acc)
            }
        }
        return LogMel(frames: frames, values: values, firstFrame: firstSample / hop)
    }

    /// Amplitude to Wav2Lip's normalised decibels.
    @inline(__always)
    static func normalise(_ amplitude: Double) -> Float {
        let db = 20 * log10(max(1e-5, amplitude)) - 20
        return Float(min(4, max(-4, 8 * (db + 100) / 100 - 4)))
    }

    /// Index into a signal of length n with numpy's 'reflect' padding.
    static func reflect(_ i: Int, _ n: Int) -> Int {
        if n == 1 { return 0 }
        let period = 2 * (n - 1)
        var k = i % period
        if k < 0 { k += period }
        return k < n ? k : period - k
    }

    /// Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
    static func hzToMel(_ f: Double) -> Double {
        let fsp = 200.0 / 3, minLogHz = 1000.0, minLogMel = minLogHz / fsp, logstep = log(6.4) / 27
        return f >= minLogHz ? minLogMel + log(f / minLogHz) / logstep : f / fsp
    }

    static func melToHz(_ m: Double) -> Double {
        let fsp = 200.0 / 3, minLogHz = 1000.0, minLogMel = minLogHz / fsp, logstep = log(6.4) / 27
        return m >= minLogMel ? minLogHz * exp(logstep * (m - minLogMel)) : fsp * m
    }

    /// librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600, htk=False, norm='slaney').
    static func slaneyFilters() -> [(first: Int, weights: [Double])] {
        let nBins = fftSize / 2 + 1, nMels = melBins
        let fftFreqs = (0..<nBins).map { Double($0) * Double(sampleRate) / Double(fftSize) }
        let lo = hzToMel(fMin), hi = hzToMel(fMax)
        let melF = (0..<(nMels + 2)).map { melToHz(lo + (hi - lo) * Double($0) / Double(nMels + 1)) }
        return (0..<nMels).map { i in
            let enorm = 2 / (melF[i + 2] - melF[i])
            var w = [Double](repeating: 0, count: nBins)
            for k in 0..<nBins {
                let lower = (fftFreqs[k] - melF[i]) / (melF[i + 1] - melF[i])
                let upper = (melF[i + 2] - fftFreqs[k]) / (melF[i + 2] - melF[i + 1])
                w[k] = max(0, min(lower, upper)) * enorm
            }
            let first = w.firstIndex { $0 > 0 } ?? 0
            let last = w.lastIndex { $0 > 0 } ?? 0
            return (first, Array(w[first...max(first, last)]))
        }
    }
}

/// Log-mel frames on a track's 80-per-second grid.
package struct LogMel: Sendable, Hashable {
    /// Number of frames held.
    package let frames: Int
    /// `frames × 80` values, frame-major.
    package let values: [Float]
    /// Track frame number of `values`' first frame.
    package let firstFrame: Int

    package init(frames: Int, values: [Float], firstFrame: Int) {
        precondition(values.count == frames * MelSpectrogram.melBins)
        self.frames = frames
        self.values = values
        self.firstFrame = firstFrame
    }

    /// Mel frames in one window.
    package static let windowFrames = 16

    /// The value at track frame `frame`, bin `bin`: the floor (silence) outside the frames held.
    @inline(__always)
    package func value(frame: Int, bin: Int) -> Float {
        let f = frame - firstFrame
        return f >= 0 && f < frames ? values[f * MelSpectrogram.melBins + bin] : MelSpectrogram.floor
    }

    /// The track mel frame whose centre is nearest to video frame `index`'s time, exactly:
    /// `round(index · 80 / frameRate)` with `frameRate = num/den`, halves rounded up.
    package static func centerFrame(forFrame index: Int, frameRateNum num: Int, den: Int) -> Int {
        // index·80·den/num rounded half up = floor((2·index·80·den + num) / (2·num)).
        let a = 2 * index * 80 * den + num, b = 2 * num
        return a >= 0 ? a / b : -((-a + b - 1) / b)
    }

    /// The 16-frame (0.2 s) window centred on video frame `index` at `num/den` frames per second:
    /// track mel frames `c − 8 ..< c + 8` with `c` from ``centerFrame(forFrame:frameRateNum:den:)``
    /// (the window's midpoint lies half a mel frame, 6.25 ms, before the video frame's time).
    /// Layout: `80 × 16`, bin-major (`values[bin·16 + t]`), as Wav2Lip feeds `(1, 80, 16)`.
    /// Frames outside the audio are the floor value (silence).
    package func melWindow(forFrame index: Int, frameRateNum num: Int, den: Int) -> [Float] {
        window(center: LogMel.centerFrame(forFrame: index, frameRateNum: num, den: den))
    }

    /// ``melWindow(forFrame:frameRateNum:den:)`` for a floating-point frame rate.
    package func melWindow(forFrame index: Int, frameRate: Double) -> [Float] {
        let c = Int((Double(index) * 80 / frameRate + 0.5 + 1e-9).rounded(.down))
        return window(center: c)
    }

    private func window(center c: Int) -> [Float] {
        let w = LogMel.windowFrames, bins = MelSpectrogram.melBins
        var out = [Float](repeating: MelSpectrogram.floor, count: bins * w)
        for t in 0..<w {
            let f = c - w / 2 + t - firstFrame
            guard f >= 0 && f < frames else { continue }
            for b in 0..<bins { out[b * w + t] = values[f * bins + b] }
        }
        return out
    }
}
