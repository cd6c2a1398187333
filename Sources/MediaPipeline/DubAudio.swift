import DubfarmCore
import FFmpeg

/// The dub track as the lip-sync stage needs it.
package enum DubAudio {
    /// Decodes the whole audio track of `path` to 16 kHz mono Float PCM (``AudioWindow/sampleRate``).
    package static func decodePCM(path: String) throws -> [Float] {
        try decodePCM(path: path, sampleRate: AudioWindow.sampleRate)
    }

    /// Decodes the whole audio track of `path` to mono Float PCM at `sampleRate`.
    package static func decodePCM(path: String, sampleRate: Int) throws -> [Float] {
        try farmErrors {
            let out = try decodeMonoPCM(path: path, sampleRate: sampleRate)
            guard !out.isEmpty else { throw DubfarmError(.badInput, "\(fileName(path)): the audio track is empty") }
            return out
        }
    }
}
