// ESLint for the TypeScript sources: typescript-eslint's recommended rules, and the engine's
// boundary: src/core is pure (no vscode, no host↔view protocol), enforced here.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'out/**',
      'node_modules/**',
      '.cache/**',
      '.bench/**',
      'test/fixtures/**',
      'test/fuzz/corpus/**',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts', '**/*.mjs', '**/*.cjs'],
    rules: {
      // TypeScript's own noUnusedLocals/noUnusedParameters report these.
      '@typescript-eslint/no-unused-vars': 'off',
      'no-undef': 'off',
    },
  },
  {
    // CommonJS preloads (the bench's RSS probe) load modules with require.
    files: ['**/*.cjs'],
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    files: ['src/core/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [{ name: 'vscode', message: 'src/core is the engine: it never imports vscode.' }],
          patterns: [
            {
              group: ['**/protocol', '**/protocol/*', '**/extension/*', '**/cli/*'],
              message: 'src/core imports neither the host↔view protocol nor its callers.',
            },
          ],
        },
      ],
    },
  },
);
