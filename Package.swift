// swift-tools-version:6.1
import PackageDescription

// Dependencies are pinned with `exact:` (Package.resolved stays out of git). Layers (docs/design.md): ElasticCore and ElasticWire are pure (no sockets, files or clocks);
// ElasticStorage and ElasticTransport do I/O; ElasticServices are thin shells; `elastic` is the CLI.
let package = Package(
    name: "elastic",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "elastic", targets: ["elastic"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", exact: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", exact: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", exact: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", exact: "4.5.2"),
        .package(url: "https://github.com/apple/swift-asn1.git", exact: "1.7.4"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", exact: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", exact: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", exact: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", exact: "2.4.1"),
    ],
    targets: [
        .systemLibrary(
            name: "CZstd",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]
        ),
        .systemLibrary(
            name: "COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .target(name: "ElasticCore"),
        // The numerical kernels and codecs run every step: optimized even in debug builds (tests
        // train real models), which only the root package may ask for.
        .target(name: "ElasticNumerics", dependencies: ["ElasticCore", "COpenBLAS"], swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        .target(name: "ElasticWire", dependencies: ["ElasticCore"]),
        .target(name: "ElasticStorage", dependencies: ["ElasticCore", "ElasticNumerics", "CZstd"]),
        .target(
            name: "ElasticTransport",
            dependencies: [
                "ElasticWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "ElasticServices",
            dependencies: [
                "ElasticCore", "ElasticWire", "ElasticTransport", "ElasticStorage", "ElasticNumerics",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "elastic",
            dependencies: [
                "ElasticServices", "ElasticStorage",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // Seeds, the W1 reference's path: shared by the test targets.
        .target(name: "ElasticTestSupport", path: "Tests/ElasticTestSupport"),
        .testTarget(name: "ElasticCoreTests", dependencies: ["ElasticCore", "ElasticTestSupport"]),
        .testTarget(name: "ElasticWireTests", dependencies: ["ElasticWire", "ElasticTestSupport"]),
        .testTarget(name: "ElasticStorageTests", dependencies: ["ElasticStorage", "ElasticCore", "ElasticNumerics", "ElasticTestSupport"]),
        .testTarget(name: "ElasticNumericsTests", dependencies: ["ElasticNumerics", "ElasticCore", "ElasticTestSupport"]),
        .testTarget(
            name: "ElasticTransportTests",
            dependencies: [
                "ElasticCore", "ElasticWire", "ElasticTransport", "ElasticServices",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "ElasticObservabilityTests",
            dependencies: ["ElasticServices", "ElasticTestSupport", .product(name: "Prometheus", package: "swift-prometheus")]
        ),
        // Runs the built `elastic` binary; `swift build --build-tests` builds it first.
        .testTarget(
            name: "ElasticCLITests",
            dependencies: [
                "ElasticServices", "ElasticTestSupport", "ElasticCore", "ElasticWire", "ElasticTransport", "ElasticStorage", "ElasticNumerics",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
