import ElasticCore
import ElasticNumerics
import ElasticStorage
import ElasticTestSupport
import Foundation
import Testing

@Suite struct CheckpointNPZTests {
    @Test func crc32MatchesTheStandardVectors() {
        #expect(CRC32.checksum([]) == 0)
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum(Array("The quick brown fox jumps over the lazy dog".utf8)) == 0x414F_A339)
        // Slicing-by-8 and the byte loop agree at every length and split.
        var rng = SplitMix64(seed: 41)
        let bytes = (0..<300).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let whole = CRC32.checksum(bytes)
        for split in [0, 1, 7, 8, 9, 100, 299, 300] {
            var crc = CRC32()
            crc.update(Array(bytes[..<split]))
            crc.update(Array(bytes[split...]))
            #expect(crc.value == whole, "split at \(split)")
        }
    }

    @Test func npyHeadersAreAlignedAndParse() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        var rng = SplitMix64(seed: 42)
        let layers = [sampleLayer(0, fanIn: 5, fanOut: 3, extras: [NamedTensor(name: "weight.residual", shape: [5, 3], values: gaussianFloats(15, sigma: 1, rng: &rng))], rng: &rng)]
        try commitModel(scratch.store, step: 77, layers: layers)
        let loaded = try CheckpointReader.load(directory: scratch.store.directory(step: 77))
        let arrays = try CheckpointExport.arrays(of: loaded)
        #expect(arrays.map(\.name) == ["step", "layer0.optimizer_step", "layer0.weight", "layer0.bias", "layer0.weight.velocity", "layer0.bias.velocity", "layer0.weight.residual"])
        #expect(arrays[0].values == .int64(77) && arrays[0].shape == [])
        #expect(arrays[2].shape == [5, 3])

        let path = scratch.file("export.npz")
        try CheckpointExport.writeNPZ(loaded, to: path)
        let zip = fileBytes(path)
        // Local file header of the first entry, then its .npy header.
        #expect(Array(zip[0..<4]) == [0x50, 0x4B, 0x03, 0x04])
        let nameLength = Int(zip[26]) | Int(zip[27]) << 8
        #expect(String(decoding: zip[30..<(30 + nameLength)], as: UTF8.self) == "step.npy")
        let npy = Array(zip[(30 + nameLength)...])
        let header = try NumpyHeader.parse(npy, path: "step.npy")
        #expect(header.descr == "<i8" && header.shape == [] && !header.fortranOrder && header.dataOffset % 64 == 0)
        // End of central directory: 7 entries.
        let end = Array(zip.suffix(22))
        #expect(Array(end[0..<4]) == [0x50, 0x4B, 0x05, 0x06])
        #expect(Int(end[10]) | Int(end[11]) << 8 == 7)
        // Reproducible byte for byte.
        let again = scratch.file("again.npz")
        try CheckpointExport.writeNPZ(loaded, to: again)
        #expect(fileBytes(again) == zip)
    }

    @Test func numpyLoadsTheExport() throws {
        guard Self.numpyAvailable() else {
            print("skipped numpyLoadsTheExport: python3 with numpy is not available (pip install numpy to run it)")
            return
        }
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        var rng = SplitMix64(seed: TestSeed.make("numpyLoadsTheExport"))
        let layers = [
            sampleLayer(0, fanIn: 12, fanOut: 7, optimizerStep: 300, rng: &rng),
            sampleLayer(1, fanIn: 7, fanOut: 3, activation: .none, optimizerStep: 300,
                        extras: [NamedTensor(name: "residual", shape: [7, 3], values: gaussianFloats(21, sigma: 1, rng: &rng))], rng: &rng),
        ]
        try commitModel(scratch.store, step: 300, layers: layers)
        let loaded = try CheckpointReader.load(directory: scratch.store.directory(step: 300))
        let path = scratch.file("w1.npz")
        try CheckpointExport.writeNPZ(loaded, to: path)

        let script = """
        import json, sys, numpy as np
        z = np.load(sys.argv[1])
        out = {}
        for k in z.files:
            a = z[k]
            out[k] = {"shape": list(a.shape), "dtype": a.dtype.str, "first": a.reshape(-1)[:3].tolist() if a.ndim else a.item(),
                      "bits": a.reshape(-1).view("<u4")[:3].tolist() if a.dtype == np.float32 else None}
        print(json.dumps(out))
        """
        let output = try Self.python(["-c", script, path])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: [String: Any]])
        #expect(Set(json.keys) == ["step", "layer0.optimizer_step", "layer0.weight", "layer0.bias", "layer0.weight.velocity", "layer0.bias.velocity",
                                   "layer1.optimizer_step", "layer1.weight", "layer1.bias", "layer1.weight.velocity", "layer1.bias.velocity", "layer1.residual"])
        #expect(json["step"]?["first"] as? Int == 300)
        #expect(json["step"]?["dtype"] as? String == "<i8")
        #expect(json["layer1.optimizer_step"]?["first"] as? Int == 300)
        #expect(json["layer0.weight"]?["shape"] as? [Int] == [12, 7])
        #expect(json["layer0.weight"]?["dtype"] as? String == "<f4")
        #expect(json["layer0.weight.velocity"]?["shape"] as? [Int] == [84])
        #expect(json["layer1.residual"]?["shape"] as? [Int] == [7, 3])
        for (name, tensor) in [("layer0.weight", layers[0].state.tensors[0]), ("layer1.bias", layers[1].state.tensors[1]), ("layer1.residual", layers[1].extras[0])] {
            let bits = json[name]?["bits"] as? [Int]
            #expect(bits == tensor.values.prefix(3).map { Int($0.bitPattern) }, "\(name): numpy sees the same bits")
        }
    }

    static func numpyAvailable() -> Bool {
        (try? python(["-c", "import numpy"])) != nil
    }

    /// Runs python3; returns its standard output, or throws when it cannot run or fails.
    static func python(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let output = out.fileHandleForReading.readDataToEndOfFile()
        let errors = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CheckpointError(.io, "python3 exited with \(process.terminationStatus): \(String(decoding: errors, as: UTF8.self))")
        }
        return String(decoding: output, as: UTF8.self)
    }
}
