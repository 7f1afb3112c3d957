/**
 * agent/data — dataset loaders and client partitioners.
 *
 * Classification loaders return a `Dataset` (one flat row-major buffer, uint8 pixels kept as bytes);
 * `select` copies a client's rows out as float32. Partitioners return, per client, the sorted row
 * indices of its shard. Everything is synchronous except the streaming CSV loaders.
 */
export { type Dataset, type Shard, select, classCounts } from './dataset';
export { type IdxArray, readIdx, readIdxFile, datasetFromIdx } from './idx';
export { type MnistOptions, loadMnist, mnistPackageDir } from './mnist';
export { type Rng, createRng, shuffleInPlace } from './rng';
export {
  type PartitionSpec,
  type DirichletOptions,
  type OwnerShard,
  type OwnerGroup,
  partitionIid,
  partitionDirichlet,
  partitionByOwner,
  partitionOwnerGroups,
  parsePartition,
  partition,
  sampleDirichlet,
} from './partition';
export { FEMNIST_CLASSES, loadFemnist, femnistWriterCount } from './femnist';
export { type LeafJsonOptions, loadLeafJson } from './leaf';
export {
  type CsvRecord,
  type CsvDatasetOptions,
  type CsvDataset,
  DEFAULT_MISSING_VALUES,
  readCsvRecords,
  splitCsvRecord,
  loadCsvDataset,
} from './csv';
export {
  type AirQualityOptions,
  type AirQualityDataset,
  type FeatureStats,
  AIR_CHANNELS,
  AIR_CALENDAR_FEATURES,
  AIR_NUMERIC_COLUMNS,
  beijingAirStations,
  loadBeijingAir,
} from './beijing-air';
