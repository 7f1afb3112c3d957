import { type ModelSpec, classCount, paramCount } from '../model';
import type { TrainTask } from './types';

export function checkData(spec: ModelSpec, x: unknown, labels: unknown, what = 'data'): void {
  if (!(x instanceof Float32Array)) throw new Error(`${what}: x must be a Float32Array`);
  if (!(labels instanceof Uint8Array)) throw new Error(`${what}: labels must be a Uint8Array`);
  const expected = labels.length * spec.inputSize;
  if (x.length !== expected) {
    throw new Error(
      `${what}: x has ${x.length} values but ${labels.length} labels × inputSize ${spec.inputSize} = ${expected} (length mismatch)`,
    );
  }
  const classes = classCount(spec);
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] >= classes) throw new Error(`${what}: label ${labels[i]} at index ${i} is out of range (model has ${classes} classes)`);
  }
}

export function checkParams(spec: ModelSpec, params: unknown): void {
  if (!(params instanceof Float32Array)) throw new Error('params must be a Float32Array');
  const need = paramCount(spec);
  if (params.length !== need) throw new Error(`params has ${params.length} values, model ${spec.name} needs ${need}`);
}

export function checkTask(spec: ModelSpec, task: TrainTask): void {
  checkParams(spec, task.params);
  const isInt = (v: unknown, min: number) => typeof v === 'number' && Number.isInteger(v) && v >= min;
  if (!isInt(task.steps, 0)) throw new Error(`train: steps must be an integer >= 0, got ${task.steps}`);
  if (!isInt(task.batchSize, 1)) throw new Error(`train: batchSize must be an integer >= 1, got ${task.batchSize}`);
  if (!(typeof task.lr === 'number' && Number.isFinite(task.lr) && task.lr > 0)) throw new Error(`train: lr must be a positive number, got ${task.lr}`);
  if (!Number.isInteger(task.seed)) {
    throw new Error(`train: seed must be an integer, got ${task.seed}`);
  }
  if (task.deadlineSeconds !== undefined && !(typeof task.deadlineSeconds === 'number' && task.deadlineSeconds >= 0)) {
    throw new Error(`train: deadlineSeconds must be a number >= 0, got ${task.deadlineSeconds}`);
  }
}
