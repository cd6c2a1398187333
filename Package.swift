// swift-tools-version:6.1
//
// dubfarm — a distributed batch render farm for video dubbing.
//
// Layout (one module per concern):
//   C system libraries  CZeroMQ, CFFmpeg, CLibPQ, COpenBLAS   (module maps only)
//   Thin wrappers       ZeroMQ, FFmpeg, Postgres, BLAS         (the only code touching raw C pointers)
//   Storage             DurableFiles (atomic writes, packet-bundle files, the result log)
//   Pure logic          DubfarmCore (ids, states, planning, errors), FarmProtocol (wire codec)
//   Services            FarmConfig, FarmStore, MediaPipeline, Coordinator, Worker, FarmClient, LocalFarm
//   Model               Engine (tensors, ops on sgemm), VQModel (SwapTalk-style model, weights)
//   Dubbing             FaceAnalysis, AudioFeatures, Dubbing (the worker's `dub` stage)
//   Executable          dubfarm (command line)
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked"], .when(configuration: .release)),
]

/// `-target-cpu haswell` (AVX2) for EngineKernelsAVX2 on x86-64 hosts; elsewhere it is a second
/// baseline build of the same kernels, and never chosen.
#if arch(x86_64)
let avx2Settings: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]
#else
let avx2Settings: [SwiftSetting] = []
#endif

let package = Package(
    name: "dubfarm",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "dubfarm", targets: ["dubfarm"]),
    ],
    // Exact versions: the image build (Deploy/docker/Dockerfile) resolves without Package.resolved,
    // which stays out of git (the package mirror's commit ids are not GitHub's).
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", exact: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams.git", exact: "6.2.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", exact: "3.12.3"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", exact: "2.13.0"),
        // Monitoring: the metrics/dashboard HTTP server (core product only, no default traits) and Prometheus.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", exact: "2.28.1", traits: []),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", exact: "2.4.1"),
        // The dashboard's login: bcrypt password hashes.
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", exact: "2.5.0"),
        // Batch manifests (`submit --manifest jobs.csv`).
        .package(url: "https://github.com/swiftcsv/SwiftCSV.git", exact: "0.10.0"),
        // `make docs` only (a command plugin: not built by `swift build`).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", exact: "1.5.0"),
    ],
    targets: [
        // MARK: C system libraries
        .systemLibrary(name: "CZeroMQ", pkgConfig: "libzmq", providers: [.apt(["libzmq3-dev"])]),
        .systemLibrary(name: "CFFmpeg", pkgConfig: "libavformat",
                       providers: [.apt(["libavformat-dev", "libavcodec-dev", "libavutil-dev", "libswscale-dev", "libswresample-dev"])]),
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        // glibc's allocator statistics and trimming (mallinfo2, malloc_trim): header only.
        .systemLibrary(name: "CMalloc"),

        // MARK: Thin wrappers (no raw pointer leaves these)
        .target(name: "ZeroMQ", dependencies: ["CZeroMQ"], swiftSettings: swiftSettings),
        .target(name: "FFmpeg", dependencies: ["CFFmpeg"], swiftSettings: swiftSettings),
        .target(name: "Postgres", dependencies: ["CLibPQ", "DubfarmCore"], swiftSettings: swiftSettings),
        .target(name: "BLAS", dependencies: ["COpenBLAS"], swiftSettings: swiftSettings),

        // MARK: Pure logic
        .target(name: "DubfarmCore", dependencies: [], swiftSettings: swiftSettings),
        .target(name: "FarmProtocol", dependencies: ["DubfarmCore"], swiftSettings: swiftSettings),

        // MARK: Services
        .target(name: "FarmSecurity", dependencies: ["DubfarmCore", "ZeroMQ"], swiftSettings: swiftSettings),
        .target(name: "FarmConfig", dependencies: [
            "DubfarmCore", .product(name: "Yams", package: "Yams"),
        ], swiftSettings: swiftSettings),
        .target(name: "FarmStore", dependencies: [
            "DubfarmCore", "Postgres", .product(name: "Logging", package: "swift-log"),
        ], resources: [], swiftSettings: swiftSettings),
        .target(name: "DurableFiles", dependencies: ["DubfarmCore"], swiftSettings: swiftSettings),
        .target(name: "MediaPipeline", dependencies: [
            "DubfarmCore", "DurableFiles", "FFmpeg", .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        // MARK: Monitoring (pure views for `top` and the dashboard; metrics and the HTTP server)
        .target(name: "FarmMonitor", dependencies: ["DubfarmCore", "FarmProtocol"], swiftSettings: swiftSettings),
        .target(name: "Monitoring", dependencies: [
            "DubfarmCore", "FarmProtocol", "FarmMonitor",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], swiftSettings: swiftSettings),
        .target(name: "Coordinator", dependencies: [
            "DubfarmCore", "FarmProtocol", "FarmConfig", "FarmStore", "MediaPipeline", "DurableFiles", "ZeroMQ", "Monitoring", "FarmMonitor", "FarmSecurity",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], swiftSettings: swiftSettings),
        .target(name: "Worker", dependencies: [
            "DubfarmCore", "FarmProtocol", "MediaPipeline", "ZeroMQ", "CMalloc",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Crypto", package: "swift-crypto"),
        ], swiftSettings: swiftSettings),
        .target(name: "FarmClient", dependencies: [
            "DubfarmCore", "FarmProtocol", "ZeroMQ",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Yams", package: "Yams"),
            .product(name: "SwiftCSV", package: "SwiftCSV"),
        ], swiftSettings: swiftSettings),
        .target(name: "LocalFarm", dependencies: [
            "DubfarmCore", "FarmConfig", "Postgres", .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),

        // MARK: Model
        // The engine's vector kernels, compiled twice from the same files (EngineKernelsAVX2 holds
        // symbolic links): for the baseline target, and for AVX2 CPUs; Engine picks one at run time.
        .target(name: "EngineKernels", swiftSettings: swiftSettings),
        .target(name: "EngineKernelsAVX2", swiftSettings: swiftSettings + avx2Settings),
        .target(name: "Engine", dependencies: ["BLAS", "EngineKernels", "EngineKernelsAVX2"], swiftSettings: swiftSettings),
        .target(name: "VQModel", dependencies: ["Engine"], swiftSettings: swiftSettings),

        // MARK: Dubbing (faces and audio)
        .target(name: "FaceAnalysis", dependencies: ["DubfarmCore"], swiftSettings: swiftSettings),
        .target(name: "AudioFeatures", dependencies: [], swiftSettings: swiftSettings),
        .target(name: "Dubbing", dependencies: [
            "Worker", "FaceAnalysis", "AudioFeatures", "VQModel", "Engine", "MediaPipeline", "DubfarmCore",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        // Training data: the dub stage's crops and mel windows as safetensors shards (docs/dataset.md).
        .target(name: "TrainingData", dependencies: [
            "Dubbing", "FaceAnalysis", "AudioFeatures", "VQModel", "MediaPipeline", "DubfarmCore",
        ], swiftSettings: swiftSettings),

        // MARK: Executable
        .executableTarget(name: "dubfarm", dependencies: [
            "DubfarmCore", "FarmConfig", "FarmStore", "Coordinator", "Worker", "FarmClient", "LocalFarm",
            "MediaPipeline", "DurableFiles", "Engine", "VQModel", "Dubbing", "TrainingData", "FaceAnalysis", "FarmMonitor", "Monitoring", "FarmSecurity", "ZeroMQ",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], swiftSettings: swiftSettings),

        // MARK: Tests
        .target(name: "FarmTestSupport", dependencies: ["LocalFarm", "FarmStore", "MediaPipeline", "DubfarmCore"],
                path: "Tests/FarmTestSupport"),
        .testTarget(name: "DubfarmCoreTests", dependencies: ["DubfarmCore"]),
        .testTarget(name: "FarmProtocolTests", dependencies: ["FarmProtocol", "DubfarmCore"]),
        .testTarget(name: "FarmConfigTests", dependencies: ["FarmConfig"]),
        .testTarget(name: "FarmClientTests", dependencies: ["FarmClient", "FarmProtocol", "DubfarmCore"]),
        .testTarget(name: "FarmSecurityTests", dependencies: ["FarmSecurity", "ZeroMQ", "DubfarmCore"]),
        .testTarget(name: "FarmStoreTests", dependencies: ["FarmStore", "FarmTestSupport"]),
        .testTarget(name: "PostgresTests", dependencies: ["Postgres", "DubfarmCore", "FarmTestSupport"]),
        .testTarget(name: "AudioFeaturesTests", dependencies: ["AudioFeatures"], exclude: ["Fixtures"]),
        .testTarget(name: "MediaPipelineTests", dependencies: ["MediaPipeline", "DurableFiles", "DubfarmCore", "FarmTestSupport"]),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "VQModel", "BLAS"]),
        .testTarget(name: "FaceAnalysisTests", dependencies: ["FaceAnalysis", "DubfarmCore", "MediaPipeline", "FarmTestSupport"],
                    exclude: ["Fixtures"]),
        .testTarget(name: "DubbingTests", dependencies: [
            "Dubbing", "Worker", "FaceAnalysis", "AudioFeatures", "VQModel", "MediaPipeline", "DubfarmCore", "FarmProtocol",
            "FarmTestSupport", .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "WorkerTests", dependencies: ["Worker", "FarmProtocol", "DubfarmCore"]),
        .testTarget(name: "CoordinatorTests", dependencies: ["Coordinator", "DubfarmCore", "FarmProtocol", "FarmStore"]),
        .testTarget(name: "TrainingDataTests", dependencies: [
            "TrainingData", "Dubbing", "Worker", "FaceAnalysis", "AudioFeatures", "VQModel", "MediaPipeline", "DubfarmCore",
            "FarmProtocol", "FarmConfig", "FarmTestSupport", .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "FarmMonitorTests", dependencies: ["FarmMonitor", "FarmProtocol", "DubfarmCore", "Monitoring", "FarmTestSupport"]),
        // Validators/: the schema checks (Python) and vendored schemas the tests run.
        .testTarget(name: "DeployTests", dependencies: [
            "FarmConfig", "FarmTestSupport", "Postgres", .product(name: "Yams", package: "Yams"),
        ], exclude: ["Validators"]),
        .testTarget(name: "IntegrationTests", dependencies: [
            "FarmTestSupport", "FarmMonitor", "Coordinator", "Worker", "FarmClient", "FarmProtocol", "ZeroMQ", "MediaPipeline", "FaceAnalysis",
            "FarmSecurity", "Postgres", .product(name: "Crypto", package: "swift-crypto"),
        ]),
    ]
)
