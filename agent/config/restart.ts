import { schemaFor, type Role, type SchemaNode } from './schema';

function anyLeafRequiresRestart(node: SchemaNode): boolean {
  if (node.type !== 'object') return node['x-restart-required'] !== false;
  return Object.values(node.properties ?? {}).some(anyLeafRequiresRestart);
}

/**
 * Which of the changed settings (dotted paths, as from `diffPaths`) only take effect after a
 * restart, in the order given. A section counts if any setting in it does; a path the schema does
 * not know counts too (better a needless restart than a setting silently not applied).
 */
export function restartRequired(changedPaths: readonly string[], role: Role = 'agent'): string[] {
  return changedPaths.filter((path) => {
    let node: SchemaNode | undefined = schemaFor(role);
    for (const key of path.split('.')) {
      // A path below a leaf (an array element, "model.hidden.0") belongs to that leaf.
      if (node.type !== 'object') break;
      node = node.properties?.[key];
      if (!node) return true;
    }
    return anyLeafRequiresRestart(node);
  });
}
