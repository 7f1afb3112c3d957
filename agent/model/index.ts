export { type Activation, type DenseLayer, type ModelSpec, type ParamInfo, mlp, paramLayout, paramCount, validateSpec, classCount } from './spec';
export { initParams } from './init';
export { seededRandom } from './rng';
export { buildTrainStepModel, buildTrainBlockModel, type BuildOptions } from './train-step';
export { buildInferenceModel } from './inference';
