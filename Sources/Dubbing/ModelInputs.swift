import AudioFeatures
import DubfarmCore
import FaceAnalysis

/// What the model is given for one tracked frame: the aligned face crop and the frame's log-mel
/// window, with the transform that places the crop in the frame.
///
/// The one definition of the model's per-frame inputs: the dub stage (``DubProcessor``) and the
/// training-data builder (`TrainingData`) both call ``compute(frame:face:cropSize:mel:frameRate:)``
/// and ``logMel(_:)``, so the crops and mel windows a model is trained on are, bit for bit, the
/// ones a worker feeds it.
package struct ModelInputs: Sendable, Hashable {
    /// Crop pixels → frame pixels (``FaceAlignment/transform(cropSize:)`` of the tracked face).
    package var transform: SimilarityTransform
    /// The `S × S` rgb24 crop, ``FaceWarp/crop(_:transform:size:)``.
    package var crop: FaceCrop
    /// The frame's `80 × 16` bin-major log-mel window, ``LogMel/melWindow(forFrame:frameRateNum:den:)``.
    package var melWindow: [Float]

    package init(transform: SimilarityTransform, crop: FaceCrop, melWindow: [Float]) {
        self.transform = transform
        self.crop = crop
        self.melWindow = melWindow
    }

    /// The inputs for `frame` (rgb24) with its tracked `face`, a `cropSize × cropSize` crop, and
    /// the mel window of the frame's time (`frame.index` at `frameRate`) from `mel`.
    package static func compute(frame: VideoFrame, face: TrackedFace, cropSize: Int, mel: LogMel,
                               frameRate: Rational) throws -> ModelInputs {
        let transform = face.alignment.transform(cropSize: cropSize)
        let crop = try FaceWarp.crop(frame, transform: transform, size: cropSize)
        let window = mel.melWindow(forFrame: frame.index, frameRateNum: frameRate.num, den: frameRate.den)
        return ModelInputs(transform: transform, crop: crop, melWindow: window)
    }

    /// The log-mel frames of an audio window (absolute 16 kHz sample positions). The window's
    /// start is moved up to the next multiple of the hop so frame numbers stay on the track's grid;
    /// a mel frame's values then depend only on the track's samples within 400 of its centre
    /// (silence outside the track), provided the window holds them.
    package static func logMel(_ audio: AudioWindow) -> LogMel {
        let hop = Int64(MelSpectrogram.hopLength)
        let r = ((audio.startSample % hop) + hop) % hop
        let skip = Int(r == 0 ? 0 : hop - r)
        let samples = skip < audio.samples.count ? Array(audio.samples[skip...]) : []
        return MelSpectrogram().compute(samples, firstSample: Int(audio.startSample) + skip)
    }
}
