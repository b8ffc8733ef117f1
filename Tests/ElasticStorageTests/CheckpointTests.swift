import ElasticCore
import ElasticNumerics
import ElasticStorage
import ElasticTestSupport
import Foundation
import Testing

// Shared fixtures of the Checkpoint*Tests files, and the tests of the directory layout.

/// A fresh checkpoint root under the temporary directory; `remove()` deletes it.
struct CheckpointScratch {
    let path: String
    let store: CheckpointStore

    init(_ label: String = #function) throws {
        let clean = label.filter { $0.isLetter || $0.isNumber }
        var template = Array("\(NSTemporaryDirectory())/elastic-checkpoint-\(clean.prefix(40))-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw CheckpointError(.io, "mkdtemp failed: \(String(cString: strerror(errno)))")
        }
        path = String(cString: made)
        store = CheckpointStore(root: path)
    }

    func file(_ relative: String) -> String { (path as NSString).appendingPathComponent(relative) }

    func blob(step: Int, layer: Int) -> String {
        file("\(CheckpointLayout.stepDirectoryName(step: step))/\(CheckpointLayout.blobName(layer: layer))")
    }

    func manifest(step: Int) -> String {
        file("\(CheckpointLayout.stepDirectoryName(step: step))/\(CheckpointManifest.fileName)")
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Normal(0, sigma) floats (Box–Muller on SplitMix64).
func gaussianFloats(_ count: Int, sigma: Double, rng: inout SplitMix64) -> [Float] {
    (0..<count).map { _ in
        let u1 = max(rng.uniform(), 1e-300)
        let u2 = rng.uniform()
        return Float((-2 * log(u1)).squareRoot() * cos(2 * .pi * u2) * sigma)
    }
}

/// A layer with Gaussian weights (sd 0.05), small momentum slots and, optionally, extras.
func sampleLayer(_ index: Int, fanIn: Int = 24, fanOut: Int = 16, activation: Activation = .relu, optimizerStep: Int = 7,
                 extras: [NamedTensor] = [], rng: inout SplitMix64) -> LayerCheckpoint {
    let spec = LayerSpec(fanIn: fanIn, fanOut: fanOut, activation: activation)
    let state = LayerState(spec: spec, optimizerStep: optimizerStep, tensors: [
        NamedTensor(name: "weight", shape: [fanIn, fanOut], values: gaussianFloats(fanIn * fanOut, sigma: 0.05, rng: &rng)),
        NamedTensor(name: "bias", shape: [fanOut], values: gaussianFloats(fanOut, sigma: 0.01, rng: &rng)),
        NamedTensor(name: "weight.velocity", shape: [fanIn * fanOut], values: gaussianFloats(fanIn * fanOut, sigma: 1e-3, rng: &rng)),
        NamedTensor(name: "bias.velocity", shape: [fanOut], values: gaussianFloats(fanOut, sigma: 1e-3, rng: &rng)),
    ])
    return LayerCheckpoint(index: index, state: state, extras: extras)
}

/// `count` chained layers (fanOut of one = fanIn of the next).
func sampleModel(layers count: Int, width: Int = 24, seed: UInt64) -> [LayerCheckpoint] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { sampleLayer($0, fanIn: width, fanOut: width, rng: &rng) }
}

func sampleHeader(generation: UInt64 = 3, createdAt: Int64 = 1_732_690_000_000) -> CheckpointHeader {
    CheckpointHeader(
        generation: generation, createdAt: createdAt, jobName: "w1-test", jobSpecHash: "9f2c4e01a7b3d5c6",
        dataCursor: CheckpointDataCursor(epoch: 1, offset: 2560, samplesConsumed: 68_096),
        plan: CheckpointPlan(stages: [
            CheckpointPlan.Stage(firstLayer: 0, lastLayer: 1, replicas: 2, members: ["node-a", "node-b"]),
            CheckpointPlan.Stage(firstLayer: 2, lastLayer: 2, replicas: 1, members: ["node-c"]),
        ])
    )
}

/// Writes `layers` as one part and commits them at `step`.
@discardableResult
func commitModel(_ store: CheckpointStore, step: Int, layers: [LayerCheckpoint], options: CheckpointWriteOptions = CheckpointWriteOptions()) throws -> CheckpointSummary {
    try store.writeLayers(step: step, part: "all", layers: layers, options: options)
    return try store.commit(step: step, header: sampleHeader(), layerCount: layers.count)
}

/// Expects `body` to throw a CheckpointError of `kind` whose message mentions every string in `mentioning`.
func expectCheckpointError<T>(_ kind: CheckpointError.Kind, mentioning: [String] = [], sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> T) {
    do {
        _ = try body()
        Issue.record("expected a \(kind) error, but nothing was thrown", sourceLocation: sourceLocation)
    } catch let error as CheckpointError {
        #expect(error.kind == kind, "got \(error.kind): \(error.message)", sourceLocation: sourceLocation)
        for text in mentioning {
            #expect(error.message.contains(text), "the message should mention '\(text)': \(error.message)", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected a CheckpointError, got \(error)", sourceLocation: sourceLocation)
    }
}

func fileBytes(_ path: String) -> [UInt8] {
    (try? Array(Data(contentsOf: URL(fileURLWithPath: path)))) ?? []
}

func replaceFile(_ path: String, with bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

@Suite struct CheckpointLayoutTests {
    @Test func namesAreCanonical() {
        #expect(CheckpointLayout.stepDirectoryName(step: 120) == "step-00000120")
        #expect(CheckpointLayout.incomingDirectoryName(step: 120) == ".incoming-00000120")
        #expect(CheckpointLayout.blobName(layer: 2) == "layer-0002.blob")
        #expect(CheckpointLayout.partRecordName(part: "stage0") == "part-stage0.json")
        #expect(CheckpointLayout.stepDirectoryName(step: 123_456_789) == "step-123456789")
        #expect(CheckpointLayout.step(fromDirectoryName: "step-00000120") == 120)
        #expect(CheckpointLayout.step(fromDirectoryName: "step-123456789") == 123_456_789)
        #expect(CheckpointLayout.step(fromIncomingName: ".incoming-00000007") == 7)
        for bad in ["step-120", "step-000001200", "step-0000012x", "step--0000120", "step-00000120/", "latest", ".incoming-00000120", "step-"] {
            #expect(CheckpointLayout.step(fromDirectoryName: bad) == nil, "\(bad)")
        }
        #expect(CheckpointLayout.isValidPartName("stage-0_r1.b"))
        for bad in ["", ".hidden", "a/b", "a b", String(repeating: "x", count: 65), "é"] {
            #expect(!CheckpointLayout.isValidPartName(bad), "\(bad)")
        }
    }

    @Test func commitLaysOutTheDirectoryAndListsIt() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        let layers = sampleModel(layers: 3, seed: 1)
        let summary = try commitModel(scratch.store, step: 120, layers: layers)

        #expect(summary.name == "step-00000120" && summary.isValid && summary.isLatest && summary.layerCount == 3)
        #expect(summary.ratio > 1, "Gaussian weights must compress: \(summary.rawBytes) → \(summary.storedBytes)")
        #expect(String(decoding: fileBytes(scratch.file("latest")), as: UTF8.self) == "step-00000120\n")
        let names = try FileManager.default.contentsOfDirectory(atPath: scratch.file("step-00000120")).sorted()
        #expect(names == ["layer-0000.blob", "layer-0001.blob", "layer-0002.blob", "manifest.json", "part-all.json"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).sorted() == ["latest", "step-00000120"])

        let listed = try scratch.store.list()
        #expect(listed.count == 1)
        #expect(listed.first == summary)

        let manifest = try CheckpointReader.readManifest(directory: scratch.file("step-00000120"))
        #expect(manifest.header == sampleHeader())
        #expect(manifest.step == 120 && manifest.layerCount == 3 && manifest.formatVersion == CheckpointManifest.currentVersion)
        #expect(manifest.zstd == CheckpointCompressionInfo(level: CheckpointWriteOptions.defaultLevel, libraryVersion: Zstd.libraryVersion))
        #expect(manifest.parts == [CheckpointPartSummary(name: "all", layers: [0, 1, 2], zstd: manifest.zstd)])
        #expect(manifest.blobs.map(\.spec) == layers.map(\.state.spec))
        #expect(manifest.blobs[1].tensors.map(\.name) == ["weight", "bias", "weight.velocity", "bias.velocity"])
    }

    @Test func manifestUsesTheDocumentedFieldNames() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        var rng = SplitMix64(seed: 2)
        let extra = NamedTensor(name: "weight.residual", shape: [24, 16], values: gaussianFloats(24 * 16, sigma: 1e-4, rng: &rng))
        try commitModel(scratch.store, step: 5, layers: [sampleLayer(0, extras: [extra], rng: &rng)])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(fileBytes(scratch.manifest(step: 5)))) as? [String: Any])
        #expect(Set(json.keys) == ["format", "formatVersion", "step", "generation", "createdAt", "jobName", "jobSpecHash", "dataCursor", "plan", "layerCount", "zstd", "parts", "blobs"])
        #expect(json["format"] as? String == "elastic-checkpoint")
        let cursor = try #require(json["dataCursor"] as? [String: Any])
        #expect(Set(cursor.keys) == ["epoch", "offset", "samplesConsumed"])
        let stage = try #require(((json["plan"] as? [String: Any])?["stages"] as? [[String: Any]])?.first)
        #expect(Set(stage.keys) == ["firstLayer", "lastLayer", "replicas", "members"])
        let blob = try #require((json["blobs"] as? [[String: Any]])?.first)
        #expect(Set(blob.keys) == ["layer", "file", "bytes", "spec", "optimizerStep", "tensors", "extras"])
        #expect(Set(try #require(blob["spec"] as? [String: Any]).keys) == ["fanIn", "fanOut", "activation"])
        let tensor = try #require((blob["tensors"] as? [[String: Any]])?.first)
        #expect(Set(tensor.keys) == ["name", "shape", "dtype", "transform", "codec", "offset", "rawBytes", "storedBytes", "rawXXH64", "storedXXH64"])
        #expect(tensor["dtype"] as? String == "float32")
        #expect((tensor["rawXXH64"] as? String)?.count == 16)
        let extras = try #require(blob["extras"] as? [[String: Any]])
        #expect(extras.map { $0["name"] as? String } == ["weight.residual"])
    }

    @Test func incomingDirectoriesAreNeverListedOrRestored() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        let layers = sampleModel(layers: 2, seed: 3)
        try scratch.store.writeLayers(step: 40, part: "all", layers: layers)
        #expect(try scratch.store.list().isEmpty)
        #expect(try scratch.store.incomingSteps() == [40])
        #expect(try scratch.store.newestValid().chosen == nil)

        // Even an incoming directory that holds a manifest (copied in by hand) is not a checkpoint.
        try commitModel(scratch.store, step: 30, layers: layers)
        try FileManager.default.copyItem(atPath: scratch.manifest(step: 30), toPath: scratch.file(".incoming-00000040/manifest.json"))
        #expect(try scratch.store.list().map(\.step) == [30])
        let selection = try scratch.store.newestValid()
        #expect(selection.chosen?.manifest?.step == 30)
        #expect(selection.skipped.isEmpty)
        #expect(try scratch.store.loadNewestValid().chosen?.manifest.step == 30)
    }

    @Test func aStepDirectoryWithoutManifestIsListedInvalid() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        try commitModel(scratch.store, step: 1, layers: sampleModel(layers: 1, seed: 4))
        try FileManager.default.createDirectory(atPath: scratch.file("step-00000002"), withIntermediateDirectories: false)
        let listed = try scratch.store.list()
        #expect(listed.map(\.step) == [1, 2])
        #expect(listed.map(\.isValid) == [true, false])
        #expect(listed[1].problem?.contains("manifestMissing") == true, "\(listed[1].problem ?? "")")
        #expect(CheckpointReader.verify(directory: scratch.file("step-00000002")).problems.map(\.check) == [.manifestMissing])
        #expect(CheckpointReader.verify(directory: scratch.file("step-00000099")).problems.map(\.check) == [.notFound])
    }
}
