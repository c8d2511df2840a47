// ESLint flat config: typescript-eslint's type-aware recommended rules on all sources.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'data/', 'checkpoints/', '.scratch/', 'shared/backends/wasm-src/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      'no-console': 'error',
      '@typescript-eslint/no-floating-promises': ['error', {
        // node:test's describe/it return promises the runner itself awaits.
        allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite', 'before', 'after', 'beforeEach', 'afterEach'] }],
      }],
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      // process.kill(-1) or (0) signals every process of the user or the group: only
      // test/signal-child.ts may call it, after checking the pid is a live descendant.
      'no-restricted-properties': ['error', {
        object: 'process', property: 'kill',
        message: 'Use signalDescendant/pidExists from test/signal-child.ts, or ChildProcess.kill(): a missed pid lookup must never become kill(-1).',
      }],
    },
  },
  { files: ['test/signal-child.ts'], rules: { 'no-restricted-properties': 'off' } },
  { files: ['**/cli.ts', 'scripts/**/*.ts'], rules: { 'no-console': 'off' } },
  { files: ['eslint.config.js'], ...tseslint.configs.disableTypeChecked },
);
