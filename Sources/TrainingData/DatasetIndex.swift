// TrainingData: the training-set builder behind `dubfarm dataset build` (format: docs/dataset.md).
//
//   clip ──▶ MediaProbe (frame rate, audio present?) ──▶ DubAudio.decodePCM ──▶ ModelInputs.logMel
//        ──▶ VideoDecoder (rgb24, in order) ──▶ FaceTracker (the dub stage's analyzer and parameters)
//        ──▶ ModelInputs.compute (crop + mel window: the dub stage's own function)
//        ──▶ ShardWriter (safetensors shards of ≤ 512 frames) ──▶ index.json
import DubfarmCore
import Foundation

/// `index.json` of a dataset directory (format ``DatasetIndex/format``).
package struct DatasetIndex: Codable, Sendable, Hashable {
    /// The format written: `dubfarm-dataset/1`.
    package static let format = "dubfarm-dataset/1"
    /// The index's file name in the dataset directory.
    package static let fileName = "index.json"

    package var format: String
    /// Model configuration name whose crop size the crops have.
    package var config: String
    /// Crop side `S`.
    package var imageSize: Int
    package var melBins: Int
    package var melFrames: Int
    package var clips: [Clip]
    /// Speaker names; the shards' `speaker` tensor indexes this list (first-appearance order).
    package var speakers: [String]
    package var shards: [Shard]
    /// Inputs that were not used, and why.
    package var skipped: [Skipped]

    /// One clip that was written.
    package struct Clip: Codable, Sendable, Hashable {
        /// Index in ``DatasetIndex/clips``; the shards' `clip` tensor.
        package var id: Int
        /// The file stem.
        package var name: String
        package var speaker: String
        /// The input path as given.
        package var source: String
        /// `[num, den]`: the frame rate frames are numbered at (the farm's, from ``MediaProbe``).
        package var frameRate: [Int]
        /// Whether the frames are unevenly spaced (``VideoStreamInfo/isVariableFrameRate``): they
        /// are still numbered at `frameRate`, as the farm numbers them, so picture and mel windows
        /// drift apart over the clip.
        package var variableFrameRate: Bool
        /// Frame size in pixels (the `transform` tensor maps crops into it).
        package var width: Int
        package var height: Int
        /// Frames decoded.
        package var frames: Int
        /// Frames where the tracker has a face: the frames written.
        package var framesWithFace: Int
        /// Of those, frames with the tracker's own landmarks (not bridged over a detection miss).
        package var framesWithLandmarks: Int
        /// Seconds of the clip's audio track.
        package var audioSeconds: Double
        package var shards: [String]
    }

    /// One shard file: frames of one clip, in frame order.
    package struct Shard: Codable, Sendable, Hashable {
        package var file: String
        package var clip: Int
        package var count: Int
    }

    /// An input left out.
    package struct Skipped: Codable, Sendable, Hashable {
        package var source: String
        package var reason: String
    }

    /// Reads a dataset directory's index.
    package static func load(directory: URL) throws -> DatasetIndex {
        let url = directory.appendingPathComponent(fileName)
        do {
            return try JSONDecoder().decode(DatasetIndex.self, from: Data(contentsOf: url))
        } catch {
            throw DubfarmError(.badInput, "cannot read \(url.path): \(error.localizedDescription)")
        }
    }

    /// The index as written: pretty-printed, keys sorted.
    package func encoded() throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try e.encode(self)
    }
}

/// Clip name → speaker name, from a TSV file: `file stem<TAB>speaker`, `#` comments, blank lines
/// ignored. Clips not listed are their own speaker.
package struct SpeakerMap: Sendable, Hashable {
    package var speakers: [String: String]

    package init(_ speakers: [String: String] = [:]) { self.speakers = speakers }

    /// The speaker of a clip.
    package func speaker(of clip: String) -> String { speakers[clip] ?? clip }

    /// Parses TSV text; `name` is used in error messages (`name:line: why`).
    package static func parse(_ text: String, name: String) throws -> SpeakerMap {
        var map: [String: String] = [:]
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let fields = raw.split(separator: "\t", omittingEmptySubsequences: false)
                .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            guard fields.count == 2, !fields[0].isEmpty, !fields[1].isEmpty else {
                throw DubfarmError(.badInput, "\(name):\(i + 1): expected 'file stem<TAB>speaker', got '\(line)'")
            }
            if let old = map[fields[0]], old != fields[1] {
                throw DubfarmError(.badInput, "\(name):\(i + 1): clip '\(fields[0])' is given two speakers, '\(old)' and '\(fields[1])'")
            }
            map[fields[0]] = fields[1]
        }
        return SpeakerMap(map)
    }

    /// Reads a TSV file (see ``parse(_:name:)``).
    package static func load(path: String) throws -> SpeakerMap {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw DubfarmError(.notFound, "cannot read the speakers file \(path): \(error.localizedDescription)")
        }
        return try parse(text, name: path)
    }
}
