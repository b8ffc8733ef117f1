import ElasticCore
import ElasticStorage
import Foundation
import Testing

@Suite struct DatasetRoundTripTests {
    @Test(arguments: [1, 3, 7])
    func writeOpenGather(shards: Int) throws {
        let seed: UInt64 = 0xDA7A_0000 + UInt64(shards)
        print("DatasetRoundTripTests.writeOpenGather seed \(seed)")
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let data = sampleData(count: 100, features: 5, classes: 4, seed: seed)
        var reports: [DatasetProgress] = []
        let manifest = try Dataset.write(data, to: directory.path, shards: shards, name: "toy", origin: "test seed \(seed)") { reports.append($0) }

        // The manifest: contiguous ranges of sizes within one, real sizes, counts, the file on disk.
        #expect(manifest.samples == 100 && manifest.features == 5 && manifest.classes == 4)
        #expect(manifest.shards.count == shards)
        #expect(manifest.shards.map(\.file) == (0..<shards).map(Dataset.shardFileName))
        var next = 0
        for shard in manifest.shards {
            #expect(shard.firstSample == next)
            #expect(shard.samples == 100 / shards || shard.samples == 100 / shards + 1)
            let size = try FileManager.default.attributesOfItem(atPath: directory.file(shard.file))[.size] as? Int
            #expect(size == shard.bytes)
            #expect(shard.bytes == 64 + shard.samples * (5 * 4 + 4))
            next += shard.samples
        }
        #expect(next == 100)
        #expect(manifest.classCounts == (0..<4).map { c in data.labels.count { $0 == Int32(c) } })
        #expect(try DatasetManifest.decode(readBytes(directory.file("manifest.json")), path: "m") == manifest)
        #expect(manifest.fingerprint == manifest.computedFingerprint() && manifest.fingerprint.count == 16)
        #expect(reports.last == DatasetProgress(phase: .writing, completed: reports.last!.total, total: reports.last!.total, unit: .bytes))
        // No temporary file is left behind.
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        #expect(names == (["manifest.json"] + manifest.shards.map(\.file)).sorted())

        for verification in [Dataset.Verification.atOpen, .onFirstUse] {
            let dataset = try Dataset.open(directory.path, verification: verification)
            #expect(dataset.shape == DatasetShape(samples: 100, features: 5, classes: 4))
            #expect(try dataset.allSamples() == data)

            // Random indices, repeats included, come back in the order asked.
            var rng = SplitMix64(seed: seed)
            let indices = (0..<64).map { _ in Int32(rng.next() % 100) }
            let batch = try dataset.gather(indices: indices)
            #expect(batch.count == 64 && batch.featureCount == 5 && batch.classes == 4)
            for (position, index) in indices.enumerated() {
                #expect(batch.features(of: position) == data.features(of: Int(index)))
                #expect(batch.labels[position] == data.labels[Int(index)])
            }
            #expect(try dataset.gather(indices: [Int32]()).count == 0)
        }
    }

    /// Invariant 2 at the data layer: the steps of an epoch, read through the permutation,
    /// return every sample exactly once (N divisible by B).
    @Test func anEpochThroughThePermutationReadsEverySampleOnce() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let data = sampleData(count: 120, features: 3, classes: 5, seed: 11)
        try Dataset.write(data, to: directory.path, shards: 7, name: "toy", origin: "test")
        let dataset = try Dataset.open(directory.path)
        let order = DataOrder.permutation(seed: 42, epoch: 3, count: dataset.sampleCount)
        let batch = 24
        var seen = [Int](repeating: 0, count: 120)
        for step in 0..<dataset.shape.stepsPerEpoch(batch: batch) {
            let positions = DataOrder.stepRange(step: step, batch: batch)
            let samples = try dataset.gather(order: order, positions: positions)
            for (k, position) in positions.enumerated() {
                let index = Int(order[position])
                seen[index] += 1
                #expect(samples.features(of: k) == data.features(of: index))
            }
        }
        #expect(seen.allSatisfy { $0 == 1 })
        expectDatasetError(.indexOutOfRange, mentioning: "positions") { try dataset.gather(order: order, positions: 110..<130) }
    }

    @Test func lazyOpenLoadsOnlyTheShardsItTouches() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let data = sampleData(count: 30, features: 2, classes: 3, seed: 5)
        try Dataset.write(data, to: directory.path, shards: 3, name: "toy", origin: "test")
        let dataset = try Dataset.open(directory.path, verification: .onFirstUse)
        #expect(dataset.loadedShards.isEmpty)
        _ = try dataset.gather(indices: [12, 15])
        #expect(dataset.loadedShards == [1])
        dataset.unload(shard: 1)
        #expect(dataset.loadedShards.isEmpty)
        try dataset.load(shard: 2)
        #expect(dataset.loadedShards == [2])
        #expect(try dataset.classCounts() == (0..<3).map { c in data.labels.count { $0 == Int32(c) } })

        let eager = try Dataset.open(directory.path)
        #expect(eager.loadedShards == [0, 1, 2])
        expectDatasetError(.indexOutOfRange, mentioning: "sample index 30") { try eager.gather(indices: [0, 30]) }
        expectDatasetError(.indexOutOfRange, mentioning: "sample index -1") { try eager.gather(indices: [-1]) }
    }

    @Test func writeRefusesAnExistingDataSetUnlessOverwriting() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let target = directory.file("nested/data")
        try Dataset.write(sampleData(count: 40, features: 2, classes: 2, seed: 1), to: target, shards: 7, name: "a", origin: "first")
        expectDatasetError(.alreadyExists, mentioning: target) {
            try Dataset.write(sampleData(count: 40, features: 2, classes: 2, seed: 2), to: target, shards: 2, name: "b", origin: "second")
        }
        // Left over by an interrupted write: removed by the next one.
        try writeBytes([1, 2, 3], to: target + "/.shard-00004.eds.tmp-99999")
        let replacement = sampleData(count: 10, features: 3, classes: 2, seed: 3)
        try Dataset.write(replacement, to: target, shards: 2, name: "b", origin: "second", overwrite: true)
        let names = try FileManager.default.contentsOfDirectory(atPath: target).sorted()
        #expect(names == ["manifest.json", "shard-00000.eds", "shard-00001.eds"])
        let dataset = try Dataset.open(target)
        #expect(dataset.manifest.origin == "second")
        expectDatasetError(.indexOutOfRange, mentioning: "no shard 2") { try dataset.load(shard: 2) }
        #expect(try dataset.allSamples() == replacement)
    }

    @Test func writeRefusesSamplesThatAreNotADataSet() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let good = sampleData(count: 10, features: 2, classes: 3, seed: 9)
        func write(_ samples: LabelledSamples, shards: Int = 2) throws {
            try Dataset.write(samples, to: directory.file("x"), shards: shards, name: "x", origin: "test")
        }
        expectDatasetError(.invalidArgument, mentioning: "into 0 shards") { try write(good, shards: 0) }
        expectDatasetError(.invalidArgument, mentioning: "into 11 shards") { try write(good, shards: 11) }
        var bad = good
        bad.features[7] = .nan
        expectDatasetError(.nonFiniteFeature, mentioning: "sample 3") { try write(bad) }
        bad = good
        bad.labels[4] = 3
        expectDatasetError(.labelOutOfRange, mentioning: "sample 4 has label 3") { try write(bad) }
        bad = good
        bad.features.removeLast()
        expectDatasetError(.invalidArgument, mentioning: "19 feature values") { try write(bad) }
        expectDatasetError(.invalidArgument, mentioning: "no samples") {
            try write(LabelledSamples(featureCount: 2, classes: 2, features: [], labels: []))
        }
        #expect(!FileManager.default.fileExists(atPath: directory.file("x")))
        // The plain-array form writes the same thing.
        let manifest = try Dataset.write(features: good.features, labels: good.labels, featureCount: 2, classes: 3, to: directory.file("y"), shards: 3, name: "y", origin: "arrays")
        #expect(manifest.shards.map(\.samples) == [3, 3, 4])
        #expect(try Dataset.open(directory.file("y")).allSamples() == good)
    }

    @Test func shardRangesSplitEvenly() {
        #expect((0..<3).map { Dataset.shardRange($0, samples: 10, shards: 3) } == [0..<3, 3..<6, 6..<10])
        #expect((0..<7).map { Dataset.shardRange($0, samples: 100, shards: 7).count }.reduce(0, +) == 100)
        #expect(Dataset.shardFileName(3) == "shard-00003.eds")
        #expect(Dataset.shardFileName(123_456) == "shard-123456.eds")
    }
}
