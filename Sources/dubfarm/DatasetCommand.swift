import ArgumentParser
import DubfarmCore
import FaceAnalysis
import Foundation
import TrainingData
import VQModel

/// `dubfarm dataset …`: training data for the model.
struct DatasetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dataset",
        abstract: "Build training data for the face-swap / lip-sync model from talking-head videos.",
        subcommands: [Build.self]
    )

    struct Build: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Face crops, mel windows and landmarks of every frame, as safetensors shards.",
            discussion: """
                Runs the dub stage's own code on each video: face tracking, alignment, the S×S crop, the clip's own audio through the log-mel front end and the per-frame mel window. The crop and mel window stored for a frame are bit-identical to what a worker feeds the model for that frame. Only frames with a face are written.

                Output (format dubfarm-dataset/1, docs/dataset.md):
                  DIR/index.json               clips, speakers, shards, skipped inputs
                  DIR/shard-NNNNN.safetensors  one clip's frames (at most --shard-frames):
                    crops U8 [N,S,S,3]   mel F32 [N,80,16]   landmarks F32 [N,68,2]
                    hasLandmarks U8 [N]  transform F32 [N,4] (crop to frame)
                    frame, clip, speaker I32 [N]

                A clip is named by its file stem. Its speaker is the stem unless --speakers maps it, so clips of one person can be held out together. Inputs that cannot be used (no audio track, not a video) are skipped with the reason and listed in index.json. Progress goes to stderr, one line per clip.

                Example:
                  dubfarm dataset build train/* --out data/small --config small \\
                      --speakers training/data/speakers.tsv
                  python3 -c "from safetensors.numpy import load_file; \\
                      print(load_file('data/small/shard-00000.safetensors')['crops'].shape)"
                """)
        @Argument(help: ArgumentHelp("Talking-head videos with their own speech (any container FFmpeg reads).", valueName: "video"))
        var videos: [String]
        @Option(help: ArgumentHelp("Output directory (created; a previous dataset there is replaced).", valueName: "dir"))
        var out: String
        @Option(help: "Model configuration whose crop size to use: tiny (16 px), small (128 px), paper (320 px).")
        var config: String = "small"
        @Option(help: ArgumentHelp("TSV of 'file stem<TAB>speaker' lines (# comments); unlisted clips are their own speaker.", valueName: "file"))
        var speakers: String?
        @Option(help: "Frames per shard at most.") var shardFrames: Int = 512
        @Option(help: "Use at most this many frames of each clip (for quick checks).") var maxFrames: Int?

        func validate() throws {
            guard !videos.isEmpty else { throw ValidationError("give at least one video") }
            guard shardFrames > 0 else { throw ValidationError("--shard-frames must be at least 1") }
            if let m = maxFrames, m <= 0 { throw ValidationError("--max-frames must be at least 1") }
        }

        func run() throws {
            let modelConfig: ModelConfig
            do { modelConfig = try ModelConfig.named(config) } catch {
                throw DubfarmError(.badInput, "--config: \(error)")
            }
            var options = DatasetOptions(config: modelConfig)
            options.shardFrames = shardFrames
            options.maxFramesPerClip = maxFrames
            if let speakers { options.speakers = try SpeakerMap.load(path: speakers) }
            func log(_ line: String) { FileHandle.standardError.write(Data((line + "\n").utf8)) }
            let analyzer = try FaceAnalyzer.load(log: log)
            log("dataset build: \(videos.count) input(s), configuration \(modelConfig.name) (\(modelConfig.imageSize) px crops), "
                + "landmarks \(analyzer.predictor == nil ? "absent (box-based crops)" : "on")")
            let builder = DatasetBuilder(analyzer: analyzer, options: options)
            try builder.build(inputs: videos, into: URL(fileURLWithPath: out), log: log)
        }
    }
}
