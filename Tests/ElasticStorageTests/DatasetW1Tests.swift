import ElasticCore
import ElasticStorage
import Foundation
import Testing

/// W1 against the numpy reference (reference/w1.py), byte for byte.
@Suite struct DatasetW1Tests {
    @Test func matchesTheNumpyReferenceByteForByte() throws {
        let samples = 2048
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let run = runPython([w1ReferenceScript, "--steps", "0", "--samples", "\(samples)", "--dump-dir", directory.path])
        try #require(run.ok, "the reference must run to compare with it")

        let generated = W1Dataset.generate(seed: 42, samples: samples)
        #expect(generated.featureCount == 256 && generated.classes == 10 && generated.count == samples)

        let referenceFeatures = readBytes(directory.file("x.f32"))
        let referenceLabels = readBytes(directory.file("y.i32"))
        #expect(referenceFeatures.count == samples * 256 * 4)
        #expect(referenceLabels.count == samples * 4)
        let features = littleEndianBytes(generated.features)
        let labels = littleEndianBytes(generated.labels)
        if let first = zip(features, referenceFeatures).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
            Issue.record("feature byte \(first) (sample \(first / 1024), feature \(first % 1024 / 4)) differs from the reference")
        }
        #expect(features == referenceFeatures, "features must equal x.f32 byte for byte")

        // A label may only differ on a near-tie of float32 summation order: report it with its margin.
        let teacher = W1Dataset.Teacher(seed: 42)
        for i in 0..<samples {
            let reference = referenceLabels.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self) }
            if generated.labels[i] != Int32(littleEndian: reference) {
                let logits = generated.features[i * 256..<(i + 1) * 256].withUnsafeBufferPointer { teacher.logits($0) }
                let sorted = logits.sorted(by: >)
                Issue.record("sample \(i): label \(generated.labels[i]), reference \(Int32(littleEndian: reference)), top-two margin \(sorted[0] - sorted[1])")
            }
        }
        #expect(labels == referenceLabels, "labels must equal y.i32 byte for byte")

        // The class histogram is not degenerate (a teacher bug would collapse it).
        let counts = (0..<10).map { c in generated.labels.count { $0 == Int32(c) } }
        #expect(counts.allSatisfy { $0 > 0 }, "class counts \(counts)")
    }

    /// The last samples of the full 65 536 draw from deep inside the input stream: generating
    /// just that range must give what the reference's stream gives there.
    @Test func aRangeDeepInTheStreamMatchesTheReference() throws {
        let range = 65_530..<65_536
        let module = URL(fileURLWithPath: w1ReferenceScript)
        let script = """
        import sys
        sys.path.insert(0, \(pythonString(module.deletingLastPathComponent().path)))
        import \(module.deletingPathExtension().lastPathComponent) as reference
        x, y = reference.samples(42, \(range.lowerBound), \(range.count))
        sys.stdout.write(x.astype('<f4').tobytes().hex() + "\\n" + y.astype('<i4').tobytes().hex() + "\\n")
        """
        let run = runPython(["-c", script])
        try #require(run.ok)
        let lines = run.output.split(separator: "\n").map(String.init)
        try #require(lines.count == 2)
        let generated = W1Dataset.generate(seed: 42, range: range)
        #expect(hex(littleEndianBytes(generated.features)) == lines[0])
        #expect(hex(littleEndianBytes(generated.labels)) == lines[1])

        // And the same samples from a generation that starts earlier.
        let wider = W1Dataset.generate(seed: 42, range: 65_000..<65_536)
        #expect(Array(wider.features.suffix(range.count * 256)) == generated.features)
        #expect(Array(wider.labels.suffix(range.count)) == generated.labels)
    }

    @Test func teacherFollowsTheStreamAndScales() {
        let teacher = W1Dataset.Teacher(seed: 42)
        var rng = SplitMix64(seed: 42)
        #expect(teacher.t1.count == 256 * 64 && teacher.t2.count == 64 * 10)
        #expect(teacher.t1[0] == Float(rng.normal()) * 0.0625)
        for _ in 1..<(256 * 64) { _ = rng.normal() }
        #expect(teacher.t2[0] == Float(rng.normal()) * 0.125)
    }

    @Test func writesW1AsADataSet() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        var phases: [DatasetProgress.Phase] = []
        let manifest = try W1Dataset.write(to: directory.path, seed: 42, samples: 1000, shards: 3) { phases.append($0.phase) }
        #expect(manifest.name == "w1" && manifest.origin == "w1 seed 42 samples 1000")
        #expect(phases.first == .generating && phases.last == .writing)
        let dataset = try Dataset.open(directory.path)
        #expect(try dataset.allSamples() == W1Dataset.generate(seed: 42, samples: 1000))
    }

    /// A Python string literal of `text` (a path).
    private func pythonString(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
    }

    private func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
