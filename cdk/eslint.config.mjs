// AppSync's own lint rules (@aws-appsync/eslint-plugin, recommended: type-aware) on every
// APPSYNC_JS resolver. They catch what the APPSYNC_JS runtime rejects at deploy or run time
// (for loops, try/catch, regular expressions, `in`, recursion, unsupported methods).
import appsync from '@aws-appsync/eslint-plugin';

const recommended = appsync.configs.recommended;

export default [
  { ignores: ['cdk.out/**', 'node_modules/**', 'appsync/*.test.mjs'] },
  {
    ...recommended,
    files: ['appsync/**/*.js'],
    languageOptions: {
      ...recommended.languageOptions,
      parserOptions: {
        projectService: { allowDefaultProject: ['appsync/*.js'] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
  },
];
